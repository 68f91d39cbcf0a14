//! The acceptance of "nothing lost, nothing mixed up", through `cargo xtask compare` as a user
//! runs it: two comparisons started together into one directory, a worker killed with SIGKILL
//! after its first epoch, and Ctrl-C (SIGINT to xtask alone) in the middle of a comparison.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::support::summary;

/// Arguments that make a comparison quick: the bundled subset, two threads.
///
/// The timings below rest on one floor: the cnn's training epoch is about 1.5 TFLOP on
/// Fashion-MNIST's 60,000 examples, so about 50 GFLOP on the subset's 2,000, which two threads
/// cannot do in under a tenth of a second even at the peak of two AVX-512 cores (about 450
/// GFLOP/s); in practice an engine takes the better part of a second or more (PyTorch's own
/// loop runs the full epoch in about 22 s on two cores).
const QUICK: [&str; 4] = ["--dataset", "fashion-mnist-subset", "--threads", "2"];

/// `cargo xtask compare` with `args`, started and not waited for; its stderr is piped.
fn spawn_compare(args: &[&str], out: &Path, worker: &Path) -> anyhow::Result<std::process::Child> {
    let exe = crate::support::xtask_binary();
    Command::new(exe)
        .arg("compare")
        .args(args)
        .args(QUICK)
        .arg("--out")
        .arg(out)
        .arg("--worker")
        .arg(worker)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo xtask compare")
}

/// Waits for `child`, returning its exit code (`None` for a signal) and its stderr.
fn finish(child: std::process::Child) -> anyhow::Result<(Option<i32>, String)> {
    let output = child.wait_with_output().context("waiting for compare")?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The number of epochs in the record at `path`, 0 while there is none.
fn epochs_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|record| record["epochs"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Waits until `ready` holds, for at most `limit`.
fn wait_for(what: &str, limit: Duration, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > limit {
            bail!("{what} did not happen within {} s", limit.as_secs());
        }
        // Reading a small JSON file 20 times a second costs nothing next to an epoch, and
        // notices it within 50 ms, a fraction of the shortest epoch here.
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs the three checks.
pub fn acceptance(worker: &Path) -> anyhow::Result<()> {
    let out = crate::support::acceptance_dir().join("reliability");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    two_comparisons_into_one_directory(&out.join("shared"), worker)?;
    killed_worker(&out, worker)?;
    interrupt(&out.join("interrupted"), worker)?;
    Ok(())
}

/// Two comparisons started together into one directory: one runs, the other fails at once
/// with one line naming it, and the summary holds only the first's seed.
fn two_comparisons_into_one_directory(dir: &Path, worker: &Path) -> anyhow::Result<()> {
    // The second comparison meets the directory's lock within milliseconds of the first; two
    // epochs of 500 examples, with the worker's start, keep the first holding it far longer.
    let common = [
        "--backends",
        "burn",
        "--limit-train",
        "500",
        "--epochs",
        "2",
    ];
    let first = spawn_compare(&[&common[..], &["--seed", "1"]].concat(), dir, worker)?;
    let second = spawn_compare(&[&common[..], &["--seed", "2"]].concat(), dir, worker)?;
    let (first, second) = (finish(first)?, finish(second)?);
    let (winner, loser, seed) = match (first.0, second.0) {
        (Some(0), Some(code)) if code != 0 => (first, second, 1),
        (Some(code), Some(0)) if code != 0 => (second, first, 2),
        _ => bail!(
            "two comparisons into one directory: expected one to run and one to be refused, got exit codes {:?} and {:?}: {}{}",
            first.0,
            second.0,
            first.1,
            second.1
        ),
    };
    let refusal: Vec<&str> = loser
        .1
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    ensure!(
        refusal.len() == 1
            && refusal[0].contains("is in use by")
            && refusal[0].contains("pass another --out"),
        "the refused comparison said: {}",
        loser.1
    );
    let seeds: Vec<u64> = summary(dir)?["records"]
        .as_array()
        .context("no records")?
        .iter()
        .filter_map(|record| record["seed"].as_u64())
        .collect();
    ensure!(
        seeds == [seed],
        "the summary holds seeds {seeds:?}, not the running comparison's {seed}: {}",
        winner.1
    );
    eprintln!(
        "reliability acceptance: the second comparison into one directory: {}",
        refusal[0]
    );
    Ok(())
}

/// A worker for burn that kills itself with SIGKILL once its record holds one epoch, and hands
/// every other backend to the real worker.
fn killing_worker(dir: &Path, worker: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("worker-killed-after-one-epoch.sh");
    crate::support::write_script(
        &path,
        format!(
            r#"#!/bin/sh
case "$*" in */burn/seed-*) ;; *) exec '{worker}' "$@";; esac
record=; previous=
for argument in "$@"; do [ "$previous" = --record ] && record=$argument; previous=$argument; done
'{worker}' "$@" &
pid=$!
while kill -0 $pid 2>/dev/null; do
  if grep -q '"epoch": 1' "$record" 2>/dev/null; then kill -9 $pid; wait $pid; kill -9 $$; fi
  sleep 0.05  # shorter than any epoch (a tenth of a second at least), so it kills during epoch 2
done
wait $pid
"#,
            worker = worker.display()
        ),
    )
}

/// burn's worker killed after its first epoch of three: its epoch is kept, as an incomplete
/// run, and tch still runs.
fn killed_worker(out: &Path, worker: &Path) -> anyhow::Result<()> {
    let dir = out.join("killed");
    let killing = killing_worker(out, worker)?;
    // Three epochs, so that a kill after the first falls in the middle of the run, with one
    // epoch to keep and more to lose.
    let child = spawn_compare(
        &[
            "--backends",
            "burn,tch",
            "--model",
            "cnn",
            "--epochs",
            "3",
            "--seed",
            "42",
        ],
        &dir,
        &killing,
    )?;
    let (code, stderr) = finish(child)?;
    // 1: xtask's exit code for an error, here the failed run (130 is kept for an interrupt).
    ensure!(
        code == Some(1),
        "compare with a killed worker exited {code:?}: {stderr}"
    );
    let summary = summary(&dir)?;
    let records = summary["records"].as_array().context("no records")?;
    let burn = records
        .iter()
        .find(|record| record["backend"] == "burn")
        .with_context(|| format!("the killed run's epochs were lost: {stderr}"))?;
    ensure!(
        burn["status"] == "running" && burn["epochs"].as_array().map(Vec::len) == Some(1),
        "the killed run's record is {} with {} epochs",
        burn["status"],
        burn["epochs"]
    );
    ensure!(
        records
            .iter()
            .any(|record| record["backend"] == "tch" && record["status"] == "complete"),
        "tch did not complete after burn was killed"
    );
    let report = std::fs::read_to_string(dir.join("report.md"))?;
    ensure!(
        report.contains("burn (incomplete)"),
        "the report does not show burn as incomplete"
    );
    eprintln!("reliability acceptance: a worker killed after epoch 1 of 3 kept that epoch");
    Ok(())
}

/// Ctrl-C (SIGINT to xtask alone, as `kill -INT` sends it) after burn's first epoch: the
/// worker is stopped, what finished is in the summary, tch never starts, and the exit is 130.
fn interrupt(dir: &Path, worker: &Path) -> anyhow::Result<()> {
    // Twenty epochs are at least 2 s of the cnn's arithmetic on two threads, so the interrupt,
    // sent within 50 ms of the first epoch, always finds burn mid-run.
    let child = spawn_compare(
        &[
            "--backends",
            "burn,tch",
            "--model",
            "cnn",
            "--epochs",
            "20",
            "--seed",
            "42",
        ],
        dir,
        worker,
    )?;
    let record = dir.join("records/cnn/burn/seed-42.json");
    // The first epoch takes seconds (the worker's start, data, the build, one epoch on 2,000
    // examples); 300 s is a hundred times that, for a two-core host busy with something else,
    // and only a hung worker or a record never written runs into it.
    wait_for("burn's first epoch", Duration::from_secs(300), || {
        epochs_in(&record) >= 1
    })?;
    let started = Instant::now();
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .context("running kill")?;
    ensure!(sent.success(), "kill -INT failed");
    let (code, stderr) = finish(child)?;
    let seconds = started.elapsed().as_secs_f64();
    // 130 = 128 + SIGINT, the shell's convention for a process stopped by Ctrl-C.
    ensure!(
        code == Some(130),
        "an interrupted compare exited {code:?}: {stderr}"
    );
    let summary = summary(dir)?;
    let records = summary["records"].as_array().context("no records")?;
    ensure!(
        records.len() == 1
            && records[0]["backend"] == "burn"
            && records[0]["status"] == "running"
            && epochs_in(&record) < 20,
        "after the interrupt the summary holds {records:?}"
    );
    ensure!(
        dir.join("report.md").is_file() && dir.join("report.html").is_file(),
        "the interrupted comparison wrote no report"
    );
    let line = stderr
        .lines()
        .find(|line| line.starts_with("interrupted:"))
        .with_context(|| format!("no `interrupted:` line: {stderr}"))?;
    eprintln!("reliability acceptance: Ctrl-C stopped compare in {seconds:.1} s, exit 130: {line}");
    Ok(())
}
