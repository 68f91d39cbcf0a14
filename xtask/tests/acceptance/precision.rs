//! The acceptance of the run axes, through `cargo xtask compare` as a user runs it: f32 and
//! bf16 over the same seeds on a CPU without bf16 units (simulated with
//! `PARALLAX_BF16_UNITS=none`), burn's record saying that Flex's bf16 is no bf16 kernel; one with them
//! (simulated again), which gets no warning; `--compile off,on` with tf compiling through XLA
//! and tch skipped for it, and the roofline in the report; and the flags that cannot run, one
//! line each.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};
use serde_json::Value;

use crate::support::{summary, xtask_binary};

/// `cargo xtask <args>` with `units` as the CPU's bf16 units; whether it succeeded and its
/// standard error.
fn compare(args: &[&str], units: &str) -> anyhow::Result<(bool, String)> {
    let output = Command::new(xtask_binary())
        .args(args)
        .env(parallax_core::precision::BF16_UNITS_OVERRIDE, units)
        // As a user starts it: the tests' own environment has TensorFlow's XLA flag
        // (.cargo/config.toml), which compare must set for tf's worker by itself.
        .env_remove("TF_XLA_FLAGS")
        .output()
        .with_context(|| format!("running cargo xtask {}", args.join(" ")))?;
    // The terminal as a user sees it: the progress and refusals on stderr, the answer on stdout.
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stderr}{stdout}");
    Ok((output.status.success(), stderr + &stdout))
}

fn records(summary: &Value) -> anyhow::Result<&Vec<Value>> {
    summary["records"]
        .as_array()
        .context("summary.json has no records")
}

/// Runs the scenario's comparisons and checks what they wrote.
pub fn acceptance(worker: &Path) -> anyhow::Result<()> {
    let out = crate::support::acceptance_dir().join("precision");
    let _ = std::fs::remove_dir_all(&out);
    let worker = worker.to_string_lossy().into_owned();
    let out_text = out.to_string_lossy().into_owned();
    // 500 examples, one epoch, two threads: these checks read what the axes wrote, which does
    // not depend on how well the mlp trains.
    let quick = [
        "compare",
        "--model",
        "mlp",
        "--dataset",
        "fashion-mnist-subset",
        "--limit-train",
        "500",
        "--threads",
        "2",
        "--epochs",
        "1",
        "--worker",
        worker.as_str(),
    ];

    // f32 and bf16 over three seeds, on the engines driven from Rust: the test build's one worker links TensorFlow's C library, beside which
    // the Python frameworks cannot start (their conformance suites check their bf16).
    let mut args = quick.to_vec();
    args.extend([
        "--backends",
        "burn,tch,tf",
        "--precision",
        "f32,bf16",
        "--seeds",
        "3",
        "--out",
        out_text.as_str(),
    ]);
    let (succeeded, terminal) = compare(&args, "none")?;
    ensure!(succeeded, "compare --precision f32,bf16 failed");
    let f32_runs = summary(&out.join("f32"))?;
    let bf16_runs = summary(&out.join("bf16"))?;
    ensure!(
        records(&f32_runs)?.len() == 9 && records(&bf16_runs)?.len() == 9,
        "expected 9 runs in each precision (3 backends × 3 seeds), got {} and {}",
        records(&f32_runs)?.len(),
        records(&bf16_runs)?.len()
    );
    for record in records(&bf16_runs)? {
        ensure!(
            record["precision"] == "bf16" && record["bf16_units"] == "emulated",
            "a bf16 record says precision {} and units {}",
            record["precision"],
            record["bf16_units"]
        );
    }
    for record in records(&f32_runs)? {
        ensure!(
            record["precision"] == "f32" && record.get("bf16_units").is_none(),
            "an f32 record says precision {}",
            record["precision"]
        );
    }
    // Flex converts its bf16 products to f32 and back: burn's bf16 records say so, and so
    // does the report.
    for record in records(&bf16_runs)? {
        if record["backend"] == "burn" {
            ensure!(
                record["precision_note"]
                    .as_str()
                    .is_some_and(|note| note.starts_with("Flex computes bf16 convolutions")),
                "burn's bf16 record has no note on Flex's bf16: {}",
                record["precision_note"]
            );
        }
    }
    let axes: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("axes.json")).context("reading axes.json")?,
    )?;
    let contrast = &axes["contrasts"][0];
    let backends = contrast["backends"]
        .as_array()
        .context("axes.json has no backends")?;
    ensure!(
        backends.len() == 3,
        "axes.json contrasts {} backends, not 3",
        backends.len()
    );
    for backend in backends {
        let name = backend["backend"].as_str().unwrap_or_default();
        let verdicts = backend["comparison"]["verdicts"]
            .as_array()
            .map_or(0, Vec::len);
        ensure!(
            verdicts > 0,
            "{name} has no bf16-against-f32 verdicts over 3 seeds"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).context("reading report.md")?;
    let bf16_report =
        std::fs::read_to_string(out.join("bf16/report.md")).context("reading bf16/report.md")?;
    ensure!(
        report.contains("bf16 against f32")
            && report.contains("bf16 ran emulated on this CPU")
            && bf16_report.contains("bf16 ran emulated on this CPU")
            && terminal.contains("warning: bf16 ran emulated on this CPU"),
        "the emulated bf16 warning is missing from the terminal or a report"
    );
    ensure!(
        bf16_report.contains("burn's bf16: Flex computes bf16 convolutions"),
        "bf16/report.md does not say that Flex's bf16 is no bf16 kernel"
    );

    // With bf16 units (simulated), no warning.
    let units = out.join("units");
    let units_text = units.to_string_lossy().into_owned();
    let mut args = quick.to_vec();
    args.extend([
        "--backends",
        "tch",
        "--precision",
        "bf16",
        "--seed",
        "1",
        "--out",
        units_text.as_str(),
    ]);
    let (succeeded, _) = compare(&args, "avx512-bf16")?;
    ensure!(succeeded, "compare --precision bf16 on tch failed");
    let with_units = summary(&units)?;
    ensure!(
        records(&with_units)?[0]["bf16_units"] == "avx512-bf16",
        "the record does not carry the CPU's bf16 units"
    );
    let report = std::fs::read_to_string(units.join("report.md"))?;
    ensure!(
        !report.contains("ran emulated"),
        "a CPU with bf16 units still got the emulation warning"
    );

    // Compilation: tf's step through XLA, tch skipped for it. tf refuses --compile on in a
    // worker started without the registry's TF_XLA_FLAGS, so a tf run that finishes shows that
    // compare set it. The f32 reports carry the roofline, from the peak and the bandwidth that
    // every run measured.
    let compiled = out.join("compile");
    let compiled_text = compiled.to_string_lossy().into_owned();
    let mut args = quick.to_vec();
    args.extend([
        "--backends",
        "tch,tf",
        "--compile",
        "off,on",
        "--seed",
        "1",
        "--out",
        compiled_text.as_str(),
    ]);
    let (succeeded, terminal) = compare(&args, "none")?;
    ensure!(succeeded, "compare --compile off,on failed");
    let off = summary(&compiled.join("compile-off"))?;
    let on = summary(&compiled.join("compile-on"))?;
    let on_records = records(&on)?;
    ensure!(
        records(&off)?.len() == 2
            && on_records.len() == 1
            && on_records[0]["backend"] == "tf"
            && on_records[0]["compile"] == "on",
        "expected tch and tf without compilation and tf alone with it"
    );
    ensure!(
        terminal.contains("skipping tch: it cannot run --compile on"),
        "the terminal did not say why tch was skipped for --compile on"
    );
    for record in records(&off)? {
        ensure!(
            record["memory_bandwidth"]["bytes_per_second"]
                .as_f64()
                .is_some_and(|b| b > 0.0)
                && record["layer_costs"]
                    .as_array()
                    .is_some_and(|c| c.len() == 5),
            "a record without its bandwidth or its 5 costs (4 layers and the optimizer)"
        );
        // Both time their layers one at a time.
        let timed = record["layer_times"].as_array().map_or(0, Vec::len);
        ensure!(timed == 4, "{} timed {timed} layers", record["backend"]);
    }
    ensure!(
        terminal.contains("At batch 64, the roofline puts a training step of mlp at"),
        "the terminal does not say where the step's time goes"
    );
    let report = std::fs::read_to_string(compiled.join("compile-off/report.md"))?;
    ensure!(
        report.contains("## Roofline\n\nAt batch 64, the roofline puts a training step of mlp at")
            && report.contains("× the floor")
            // Whichever engine's layers took least is named: it varies from host to host.
            && (report.contains("Timed one at a time, tch's layers took")
                || report.contains("Timed one at a time, tf's layers took"))
            && report.contains("tch fwd + bwd")
            && report.contains("tf fwd + bwd"),
        "report.md has no roofline section"
    );

    // What cannot run: one line each, nothing written. Every backend runs bf16; the refusal of
    // a backend without it is checked on a registry row made for it (crates/parallax's
    // `a_backend_without_a_precision_is_skipped_for_it...`).
    for (flags, expected) in [
        (
            ["--backends", "burn", "--compile", "on"],
            "error: burn: it cannot run --compile on: ",
        ),
        (
            ["--backends", "tch", "--compile", "on"],
            "error: tch: it cannot run --compile on: ",
        ),
    ] {
        let refused = out.join("refused");
        let refused_text = refused.to_string_lossy().into_owned();
        let mut args = quick.to_vec();
        args.extend(flags);
        args.extend(["--seed", "1", "--out", refused_text.as_str()]);
        let (succeeded, terminal) = compare(&args, "none")?;
        ensure!(!succeeded, "compare {} exited 0", flags.join(" "));
        let lines: Vec<&str> = terminal.lines().filter(|l| !l.trim().is_empty()).collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with(expected),
            "compare {} printed {:?}, not one line starting {expected:?}",
            flags.join(" "),
            lines
        );
        ensure!(
            !refused.exists(),
            "compare {} wrote {}",
            flags.join(" "),
            refused.display()
        );
    }
    Ok(())
}
