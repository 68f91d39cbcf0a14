//! The criterion results of one `cargo xtask bench` run, read back from criterion's output
//! directory, and the tables made of them: per model, each engine's median step time,
//! throughput, ratio to the fastest engine, achieved GFLOP/s and utilisation of the machine's
//! matrix-product peak, measured through every engine in the same run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, bail};
use comfy_table::{Table, presets};
use parallax_core::flops::FlopCount;
use parallax_core::peak;
use serde::{Deserialize, Serialize};

/// What criterion writes in each benchmark's `new/benchmark.json`; the fields read here.
#[derive(Deserialize)]
struct CriterionBenchmark {
    full_id: String,
}

/// Criterion's `new/estimates.json`: the median of the per-iteration times, in nanoseconds.
#[derive(Deserialize)]
struct CriterionEstimates {
    median: CriterionEstimate,
}

#[derive(Deserialize)]
struct CriterionEstimate {
    point_estimate: f64,
    confidence_interval: CriterionInterval,
}

#[derive(Deserialize)]
struct CriterionInterval {
    lower_bound: f64,
    upper_bound: f64,
}

/// One benchmark, named `<backend>/<model>/<what>/<size>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The engine, as in `--backends` (`burn`, `burn-tch`, `tch`, `tf`).
    pub backend: String,
    /// The model, or `peak` for the matrix product.
    pub model: String,
    /// `train_step`, `predict` or `matmul`.
    pub what: String,
    /// The batch size, or the matrix side for `matmul`.
    pub size: usize,
    /// The median seconds per iteration.
    pub median_seconds: f64,
    /// The 95% confidence interval of the median, seconds.
    pub median_interval: [f64; 2],
}

impl Measurement {
    fn from_id(full_id: &str, estimate: &CriterionEstimate) -> Option<Self> {
        let [backend, model, what, size] = full_id.split('/').collect::<Vec<_>>()[..] else {
            return None;
        };
        Some(Measurement {
            backend: backend.into(),
            model: model.into(),
            what: what.into(),
            size: size.parse().ok()?,
            median_seconds: estimate.point_estimate / 1e9,
            median_interval: [
                estimate.confidence_interval.lower_bound / 1e9,
                estimate.confidence_interval.upper_bound / 1e9,
            ],
        })
    }

    /// GFLOP/s of one iteration, given the model's FLOP counts (for `matmul`, none needed).
    fn gflops(&self, flops: Option<&FlopCount>) -> Option<f64> {
        let per_iteration = match self.what.as_str() {
            "matmul" => peak::product_flops(self.size),
            "train_step" => flops?.training(self.size as u64, 1) as f64,
            "predict" => (flops?.forward_per_example * self.size as u64) as f64,
            _ => return None,
        };
        Some(per_iteration / self.median_seconds / 1e9)
    }
}

/// Reads every benchmark under `criterion_home` that criterion wrote at or after `since`
/// (this run's, not an older run's left in the directory).
pub fn read(criterion_home: &Path, since: SystemTime) -> anyhow::Result<Vec<Measurement>> {
    let mut found = Vec::new();
    visit(criterion_home, since, &mut found)?;
    // Training steps first, then predictions; within each, by batch and engine.
    let key = |m: &Measurement| {
        (
            m.model.clone(),
            m.what != "train_step",
            m.what.clone(),
            m.size,
            m.backend.clone(),
        )
    };
    found.sort_by_key(key);
    Ok(found)
}

fn visit(dir: &Path, since: SystemTime, found: &mut Vec<Measurement>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let benchmark = path.join("new/benchmark.json");
        let estimates = path.join("new/estimates.json");
        let fresh = std::fs::metadata(&estimates)
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified >= since);
        if fresh {
            let read = |file: &Path| {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read criterion's {}", file.display()))
            };
            let benchmark: CriterionBenchmark = serde_json::from_str(&read(&benchmark)?)
                .with_context(|| format!("{} is not criterion's", benchmark.display()))?;
            let estimates: CriterionEstimates = serde_json::from_str(&read(&estimates)?)
                .with_context(|| format!("{} is not criterion's", estimates.display()))?;
            if let Some(measurement) = Measurement::from_id(&benchmark.full_id, &estimates.median) {
                found.push(measurement);
            }
        } else {
            visit(&path, since, found)?;
        }
    }
    Ok(())
}

/// One row of a model's table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The benchmark.
    #[serde(flatten)]
    pub measurement: Measurement,
    /// Examples per second (for `matmul`, products per second).
    pub throughput: f64,
    /// This engine's median over the fastest engine's, for the same model, step and size.
    pub ratio_to_fastest: f64,
    /// Achieved GFLOP/s, from the spec's FLOP count.
    pub gflops: Option<f64>,
    /// `gflops` over the machine's measured peak.
    pub utilisation: Option<f64>,
}

/// The machine's matrix-product peak, as this run measured it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// The engine that reached it.
    pub backend: String,
    /// The matrix side.
    pub size: usize,
    /// GFLOP/s of that engine's median product.
    pub gflops: f64,
    /// Every engine's GFLOP/s, by backend.
    pub per_engine: BTreeMap<String, f64>,
}

/// Everything `bench.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Threads every engine was given.
    pub threads: usize,
    /// The peak, when a matrix-product benchmark ran.
    pub peak: Option<Peak>,
    /// Rows by model (`mlp`, `cnn`, `resnet18`), in the order of the benchmarks.
    pub models: BTreeMap<String, Vec<Row>>,
}

impl BenchReport {
    /// The tables of `measurements`, with `flops` by model name.
    pub fn new(
        measurements: &[Measurement],
        flops: &BTreeMap<String, FlopCount>,
        threads: usize,
    ) -> Self {
        let products: Vec<&Measurement> =
            measurements.iter().filter(|m| m.what == "matmul").collect();
        let peak = products
            .iter()
            .filter_map(|m| Some((m, m.gflops(None)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(best, gflops)| Peak {
                backend: best.backend.clone(),
                size: best.size,
                gflops,
                per_engine: products
                    .iter()
                    .filter_map(|m| Some((m.backend.clone(), m.gflops(None)?)))
                    .collect(),
            });
        let mut models: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for measurement in measurements.iter().filter(|m| m.what != "matmul") {
            let fastest = measurements
                .iter()
                .filter(|m| {
                    (&m.model, &m.what, m.size)
                        == (&measurement.model, &measurement.what, measurement.size)
                })
                .map(|m| m.median_seconds)
                .fold(f64::INFINITY, f64::min);
            let gflops = measurement.gflops(flops.get(&measurement.model));
            models
                .entry(measurement.model.clone())
                .or_default()
                .push(Row {
                    measurement: measurement.clone(),
                    throughput: measurement.size as f64 / measurement.median_seconds,
                    ratio_to_fastest: measurement.median_seconds / fastest,
                    gflops,
                    utilisation: gflops.zip(peak.as_ref()).map(|(g, p)| g / p.gflops),
                });
        }
        BenchReport {
            threads,
            peak,
            models,
        }
    }

    /// The peak as one line.
    fn peak_line(&self) -> String {
        match &self.peak {
            Some(peak) => format!(
                "Matrix-product peak: {:.0} GFLOP/s through {} (f32 {n}×{n}, criterion's median; per engine: {}).",
                peak.gflops,
                peak.backend,
                peak.per_engine
                    .iter()
                    .map(|(backend, gflops)| format!("{backend} {gflops:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                n = peak.size
            ),
            None => "Matrix-product peak: not measured in this run (a filter left it out), so no utilisation.".into(),
        }
    }

    /// The tables as Markdown (`markdown`) or for a terminal.
    pub fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            out.push_str("# parallax bench\n\n");
        }
        out.push_str(&format!(
            "{} Each engine on {} thread(s); times are criterion's medians per iteration, each step synchronised (the loss or the logits read back); `× fastest` compares engines on the same model, step and batch.\n",
            self.peak_line(),
            self.threads
        ));
        // The models in the order of the benchmarks, then any other.
        let order = ["mlp", "cnn", "resnet18"];
        let mut names: Vec<&String> = self.models.keys().collect();
        names.sort_by_key(|name| order.iter().position(|o| o == name).unwrap_or(order.len()));
        for name in names {
            let mut table = Table::new();
            table
                .load_style(if markdown {
                    presets::ASCII_MARKDOWN
                } else {
                    presets::UTF8_FULL_CONDENSED
                })
                .set_header(vec![
                    "engine",
                    "step",
                    "batch",
                    "median ms",
                    "examples/s",
                    "× fastest",
                    "GFLOP/s",
                    "of peak",
                ]);
            for row in &self.models[name] {
                let m = &row.measurement;
                table.add_row(vec![
                    m.backend.clone(),
                    m.what.clone(),
                    m.size.to_string(),
                    format!("{:.2}", m.median_seconds * 1e3),
                    format!("{:.0}", row.throughput),
                    format!("{:.2}", row.ratio_to_fastest),
                    row.gflops.map_or("—".into(), |g| format!("{g:.1}")),
                    row.utilisation
                        .map_or("—".into(), |u| format!("{:.0}%", 100.0 * u)),
                ]);
            }
            if markdown {
                out.push_str(&format!("\n## {name}\n\n{table}\n"));
            } else {
                out.push_str(&format!("\n{name}\n{table}\n"));
            }
        }
        out
    }
}

/// Reads the FLOP counts the benchmark wrote (`PARALLAX_BENCH_FLOPS`).
pub fn read_flops(path: &Path) -> anyhow::Result<BTreeMap<String, FlopCount>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "the benchmark did not write its FLOP counts to {}",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} holds no FLOP counts", path.display()))
}

/// Checks that a run measured something.
pub fn require_some(measurements: &[Measurement], filter: Option<&str>) -> anyhow::Result<()> {
    if measurements.is_empty() {
        match filter {
            Some(filter) => bail!(
                "no benchmark matched the filter {filter:?}: names read <backend>/<model>/<what>/<batch>, such as tch/cnn/train_step/64"
            ),
            None => bail!("criterion wrote no results: see its output above"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(backend: &str, model: &str, what: &str, size: usize, ms: f64) -> Measurement {
        Measurement {
            backend: backend.into(),
            model: model.into(),
            what: what.into(),
            size,
            median_seconds: ms / 1e3,
            median_interval: [ms / 1e3 * 0.99, ms / 1e3 * 1.01],
        }
    }

    /// Writes one benchmark as criterion 0.8 lays it out.
    fn write_criterion(home: &Path, id: &str, median_ns: f64) {
        let dir = home.join(id.replace('/', "_")).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("benchmark.json"),
            format!(r#"{{"group_id":"x","function_id":"y","value_str":null,"throughput":null,"full_id":"{id}","directory_name":"d","title":"{id}"}}"#),
        )
        .unwrap();
        let estimate = format!(
            r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{lo},"upper_bound":{hi}}},"point_estimate":{median_ns},"standard_error":1.0}}"#,
            lo = median_ns * 0.5,
            hi = median_ns * 2.0
        );
        std::fs::write(
            dir.join("estimates.json"),
            format!(r#"{{"mean":{estimate},"median":{estimate}}}"#),
        )
        .unwrap();
    }

    #[test]
    fn criterion_output_reads_back_as_measurements() {
        let home = tempfile::tempdir().unwrap();
        let since = SystemTime::now() - std::time::Duration::from_secs(1);
        write_criterion(home.path(), "tch/cnn/train_step/64", 2.5e7);
        write_criterion(home.path(), "tf/peak/matmul/2048", 1e8);
        // The harness's benchmarks have three parts and no model: not a model's row.
        write_criterion(home.path(), "harness/gather_batch/64", 1e4);
        let found = read(home.path(), since).unwrap();
        assert_eq!(
            found,
            vec![
                Measurement {
                    backend: "tch".into(),
                    model: "cnn".into(),
                    what: "train_step".into(),
                    size: 64,
                    median_seconds: 0.025,
                    median_interval: [0.0125, 0.05],
                },
                Measurement {
                    backend: "tf".into(),
                    model: "peak".into(),
                    what: "matmul".into(),
                    size: 2048,
                    median_seconds: 0.1,
                    median_interval: [0.05, 0.2],
                },
            ]
        );
        // Results older than the run are another run's.
        assert!(
            read(
                home.path(),
                SystemTime::now() + std::time::Duration::from_secs(60)
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn tables_give_ratios_to_the_fastest_and_utilisation_of_the_best_peak() {
        let flops = BTreeMap::from([(
            "mlp".to_string(),
            FlopCount {
                forward_per_example: 1_000_000,
                backward_per_example: 2_000_000,
                optimizer_per_step: 4_000_000,
            },
        )]);
        let measurements = [
            measurement("tch", "mlp", "train_step", 64, 2.0),
            measurement("tf", "mlp", "train_step", 64, 4.0),
            measurement("tch", "mlp", "predict", 64, 0.5),
            // 2·1000³ FLOPs in 20 ms and 10 ms: 100 and 200 GFLOP/s.
            measurement("tch", "peak", "matmul", 1000, 20.0),
            measurement("tf", "peak", "matmul", 1000, 10.0),
        ];
        let report = BenchReport::new(&measurements, &flops, 2);
        let peak = report.peak.as_ref().unwrap();
        assert_eq!(peak.backend, "tf");
        assert!((peak.gflops - 200.0).abs() < 1e-9);
        assert!((peak.per_engine["tch"] - 100.0).abs() < 1e-9);
        let rows = &report.models["mlp"];
        let tf = rows
            .iter()
            .find(|r| r.measurement.backend == "tf" && r.measurement.what == "train_step")
            .unwrap();
        assert!((tf.ratio_to_fastest - 2.0).abs() < 1e-12);
        // 64·3e6 + 4e6 = 196e6 FLOPs in 4 ms: 49 GFLOP/s, 24.5% of 200.
        assert!((tf.gflops.unwrap() - 49.0).abs() < 1e-9);
        assert!((tf.utilisation.unwrap() - 0.245).abs() < 1e-12);
        let predict = rows
            .iter()
            .find(|r| r.measurement.what == "predict")
            .unwrap();
        // 64·1e6 FLOPs in 0.5 ms: 128 GFLOP/s; alone in its step, so the fastest.
        assert!((predict.gflops.unwrap() - 128.0).abs() < 1e-9);
        assert_eq!(predict.ratio_to_fastest, 1.0);
        let markdown = report.render(true);
        assert!(markdown.contains("## mlp"), "{markdown}");
        assert!(markdown.contains("200 GFLOP/s through tf"), "{markdown}");
        // tch: 98 GFLOP/s, 49% of the peak.
        assert!(markdown.contains("| 49%"), "{markdown}");
    }

    #[test]
    fn without_a_peak_there_is_no_utilisation() {
        let report = BenchReport::new(
            &[measurement("tch", "mlp", "train_step", 64, 2.0)],
            &BTreeMap::new(),
            2,
        );
        assert!(report.peak.is_none());
        assert_eq!(report.models["mlp"][0].utilisation, None);
        assert!(report.render(false).contains("not measured"));
    }
}
