//! The schemas of what a comparison writes for its report to read back: `summary.json`
//! ([`Summary`], with its failures, skips, repeats and the runs outside the main comparison),
//! GradCAM's `gradcam/summary.json` ([`GradCamSummary`]), and what one comparison's runs share
//! ([`Setup`]). The commands that produce them and the views that render them both depend on
//! this module, never on each other.
//!
//! Both summaries carry [`SUMMARY_VERSION`] and are read through a migration, as run records
//! are: a summary written before the field existed reads as version 1, and the records inside
//! a comparison's summary are migrated by core's record migration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use parallax_core::data::BoundingBox;
use parallax_core::data::DatasetName;
use parallax_core::gradcam::CamSettings;
use parallax_core::gradcam::metrics::{Agreement, Spread};
use parallax_core::peak::{self, MatmulPeak};
use parallax_core::record::{InitMode, RunRecord, RunRequest, RunStatus, write_json_atomically};
use parallax_core::stats::attribution::Attribution;
use parallax_core::stats::comparison::Comparison;
use parallax_core::{Device, Factor, OptimizerConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::environment::{Environment, cpu_model};
use crate::error::{Error, Result};

/// The layout of both summaries that this parallax writes and reads. Version 1 is the first
/// with the field; a summary without it was written before, in the same layout.
pub const SUMMARY_VERSION: u32 = 1;

/// A summary's version: [`SUMMARY_VERSION`] for a summary made by this parallax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SummaryVersion(pub u32);

impl Default for SummaryVersion {
    fn default() -> Self {
        SummaryVersion(SUMMARY_VERSION)
    }
}

/// Reads the JSON of a summary of any version up to this one, migrated to this one: `what`
/// names the kind of file in the error.
fn read_versioned(path: &Path, what: &'static str) -> Result<serde_json::Value> {
    let format = |message: String| Error::Format {
        path: path.to_path_buf(),
        what,
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::io("reading", path, source))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| format(error.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| format("not a JSON object".into()))?;
    match object.get("summary_version").map(serde_json::Value::as_u64) {
        // Written before summaries had a version: the layout of version 1.
        None => {
            object.insert("summary_version".into(), 1.into());
        }
        Some(Some(version)) if version <= u64::from(SUMMARY_VERSION) => {}
        Some(Some(version)) => {
            return Err(format(format!(
                "summary version {version} is newer than this parallax reads ({SUMMARY_VERSION}); update parallax"
            )));
        }
        Some(None) => return Err(format("`summary_version` is not a number".into())),
    }
    Ok(value)
}

/// The value as `T`, or an [`Error::Format`] naming `path`.
fn parse<T: DeserializeOwned>(
    value: serde_json::Value,
    path: &Path,
    what: &'static str,
) -> Result<T> {
    serde_json::from_value(value).map_err(|error| Error::Format {
        path: path.to_path_buf(),
        what,
        message: error.to_string(),
    })
}

/// What every run of one comparison shares, as its report describes it: taken from a request
/// the comparison wrote, or, where the directory no longer holds one, from its records alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    /// The model, as `--model` named it (a preset, or a spec file).
    pub model: String,
    /// The data set.
    pub dataset: DatasetName,
    /// Epochs per run.
    pub epochs: u32,
    /// Examples per step.
    pub batch_size: usize,
    /// The optimizer and its learning rate.
    pub optimizer: OptimizerConfig,
    /// The initial weights.
    pub init: InitMode,
    /// The factors left at each engine's own default.
    pub native: BTreeSet<Factor>,
    /// Threads per engine.
    pub threads: usize,
    /// The device.
    pub device: Device,
    /// The precision and compilation of the runs.
    pub execution: parallax_core::Execution,
}

impl Setup {
    /// The setup a request asks for.
    pub fn of_request(request: &RunRequest) -> Self {
        Setup {
            model: request.model.to_string(),
            dataset: request.data.dataset,
            epochs: request.epochs,
            batch_size: request.batch_size,
            optimizer: request.optimizer,
            init: request.init.clone(),
            native: request.native.clone(),
            threads: request.threads,
            device: request.device,
            execution: request.execution(),
        }
    }

    /// The setup the records say their runs had: the first record's, with the most epochs any
    /// of them finished (a record does not say how many were planned); `None` without records.
    pub fn of_records(records: &[RunRecord]) -> Option<Self> {
        let first = records.first()?;
        let epochs = records.iter().map(|record| record.epochs.len()).max()?;
        Some(Setup {
            model: first.run.model.clone(),
            dataset: first.dataset,
            epochs: u32::try_from(epochs).unwrap_or(u32::MAX),
            batch_size: first.batch_size,
            optimizer: first.optimizer,
            init: first.init.clone(),
            native: first.native.clone(),
            threads: first.threads,
            device: first.device,
            execution: first.execution(),
        })
    }
}

/// One engine's two runs of a seed, compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repeatability {
    /// The backend.
    pub backend: String,
    /// The seed run twice.
    pub seed: u64,
    /// Every epoch's training loss, test loss and test accuracy are the same bits.
    pub losses_identical: bool,
    /// The largest absolute difference of the per-epoch training losses.
    pub max_loss_difference: f64,
    /// Every final weight is the same bits; `None` when a weights file is missing.
    pub weights_identical: Option<bool>,
    /// The largest absolute difference of a final weight.
    pub max_weight_difference: Option<f64>,
    /// The finding as one line.
    pub line: String,
}

/// Everything one backend gave, by image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendImage {
    /// The class explained.
    pub class: u32,
    /// Its name, when known.
    pub class_name: String,
    /// The backend's own predicted class.
    pub predicted: u32,
    /// The softmax probability of the explained class.
    pub score: f64,
    /// Whether the map had no variation after the ReLU.
    pub flat: bool,
    /// Spread of the layer-resolution map (after the ReLU when on).
    pub spread_raw: Spread,
    /// Spread of the upsampled, scaled map.
    pub spread_map: Spread,
    /// The energy pointing game, when the box is known.
    pub pointing: Option<f64>,
    /// Whether the map's maximum lies in the box, when the box is known.
    pub argmax_hit: Option<bool>,
    /// Deletion AUC (zeros), when measured.
    pub deletion_auc: Option<f64>,
    /// Insertion AUC (blur), when measured.
    pub insertion_auc: Option<f64>,
}

/// How two backends' maps of one image agree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairImage {
    /// The first backend.
    pub a: String,
    /// The second backend.
    pub b: String,
    /// `map` when both maps vary after the ReLU; `signed` when one is flat and the comparison
    /// falls back to the maps before the ReLU.
    pub basis: String,
    /// Agreement of the layer-resolution maps.
    pub raw: Agreement,
    /// Agreement of the upsampled, identically scaled maps.
    pub map: Agreement,
    /// Pearson's r of the channel weights α.
    pub weights_pearson: Option<f64>,
    /// max |Δlogit| / max |logit|.
    pub logits_relative_difference: f64,
    /// Whether the two predict the same class.
    pub same_prediction: bool,
}

/// One image's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageSummary {
    /// The image's name (file stem, or data set and index).
    pub name: String,
    /// Its box, when known.
    pub bbox: Option<BoundingBox>,
    /// Its label, when known.
    pub label: Option<u32>,
    /// Per backend.
    pub backends: BTreeMap<String, BackendImage>,
    /// Every pair of backends.
    pub pairs: Vec<PairImage>,
}

/// What GradCAM's `gradcam/summary.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GradCamSummary {
    /// [`SUMMARY_VERSION`].
    pub summary_version: SummaryVersion,
    /// The model.
    pub model: String,
    /// The target layer's canonical name.
    pub layer: String,
    /// The settings.
    pub settings: Option<CamSettings>,
    /// The preprocessing of photos, or `dataset`.
    pub preprocess: String,
    /// The weights file, or `canonical seed N`.
    pub weights: String,
    /// Per image.
    pub images: Vec<ImageSummary>,
    /// Per backend: engine and version.
    pub frameworks: BTreeMap<String, String>,
    /// Per backend: seconds of GradCAM (forward and backward) per image.
    pub seconds_per_image: BTreeMap<String, f64>,
    /// Per backend: seconds of deletion and insertion per image.
    pub faithfulness_seconds_per_image: BTreeMap<String, f64>,
    /// Images or backends that failed, each with its error line.
    pub failures: Vec<(String, String)>,
    /// The colour map of the overlays (`turbo`, `viridis`, `jet`); empty in older summaries.
    #[serde(default)]
    pub colour_map: String,
}

impl GradCamSummary {
    /// Reads a GradCAM summary of this version or an older one.
    pub fn load(path: &Path) -> Result<Self> {
        const WHAT: &str = "a GradCAM summary";
        parse(read_versioned(path, WHAT)?, path, WHAT)
    }

    /// The smallest raw-map Pearson's r over all pairs and images (`None` when undefined).
    pub fn min_raw_pearson(&self) -> Option<f64> {
        self.images
            .iter()
            .flat_map(|image| &image.pairs)
            .map(|pair| pair.raw.pearson)
            .try_fold(f64::INFINITY, |low, r| r.map(|r| low.min(r)))
            .filter(|low| low.is_finite())
    }

    /// Per backend, the mean energy pointing game and argmax hit rate over images with boxes.
    pub fn localisation(&self) -> BTreeMap<String, (f64, f64)> {
        let mut totals: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
        for image in &self.images {
            for (backend, result) in &image.backends {
                if let Some(hit) = result.argmax_hit {
                    let entry = totals.entry(backend.clone()).or_default();
                    entry.0 += result.pointing.unwrap_or(0.0);
                    entry.1 += f64::from(u8::from(hit));
                    entry.2 += 1;
                }
            }
        }
        totals
            .into_iter()
            .map(|(backend, (pointing, hits, n))| (backend, (pointing / n as f64, hits / n as f64)))
            .collect()
    }
}

/// A backend that `compare` left out: it cannot run the comparison's precision or compilation,
/// or (when it was not named with `--backends`) it could not be made ready (its native library
/// could not be provisioned, or its worker not built).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    /// Backend name.
    pub backend: String,
    /// Why, in one line.
    pub reason: String,
}

/// A run that failed, with its error line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// Backend name.
    pub backend: String,
    /// The run's seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The attribution configuration or `repeat`, for runs outside the main comparison.
    #[serde(default)]
    pub configuration: Option<String>,
    /// The worker's error.
    pub error: String,
}

impl Failure {
    /// The run as a short label: backend, seed and configuration.
    pub fn label(&self) -> String {
        let mut label = self.backend.clone();
        if let Some(seed) = self.seed {
            label.push_str(&format!(" seed {seed}"));
        }
        if let Some(configuration) = &self.configuration {
            label.push_str(&format!(" [{configuration}]"));
        }
        label
    }
}

/// A record of a run outside the main comparison: an attribution configuration, or a repeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaggedRecord {
    /// The configuration's key (`native-optimizer`, `native`, `repeat`...).
    pub configuration: String,
    /// The record.
    pub record: RunRecord,
}

/// All records of one comparison, the failures beside them, and the statistics over seeds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_VERSION`].
    pub summary_version: SummaryVersion,
    /// The comparison's runs (in an attribution, the controlled ones), in the order they ran;
    /// runs that stopped early keep their finished epochs here with their status.
    pub records: Vec<RunRecord>,
    /// Runs of the attribution's other configurations and of `--repeat`.
    #[serde(default)]
    pub other_runs: Vec<TaggedRecord>,
    /// Failed runs.
    pub failures: Vec<Failure>,
    /// Descriptives and verdicts over seeds.
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// The attribution of a gap to the engines' defaults, with `--attribute`.
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// Whether each engine reproduced itself, with `--repeat`.
    #[serde(default)]
    pub repeat: Vec<Repeatability>,
    /// The command line.
    #[serde(default)]
    pub command: Option<String>,
    /// Wall seconds of the whole comparison, builds included.
    #[serde(default)]
    pub wall_seconds: Option<f64>,
    /// Backends compared by default that could not be made ready, and why.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// The machine the comparison ran on.
    #[serde(default)]
    pub environment: Option<Environment>,
}

impl Summary {
    /// Reads a comparison's summary of this version or an older one, its records migrated to
    /// this parallax's record version.
    pub fn load(path: &Path) -> Result<Self> {
        const WHAT: &str = "a comparison's summary";
        let mut value = read_versioned(path, WHAT)?;
        if let Some(records) = value["records"].as_array_mut() {
            for record in records {
                RunRecord::migrate(record, path)?;
            }
        }
        if let Some(tagged) = value["other_runs"].as_array_mut() {
            for record in tagged
                .iter_mut()
                .filter_map(|tagged| tagged.get_mut("record"))
            {
                RunRecord::migrate(record, path)?;
            }
        }
        parse(value, path, WHAT)
    }

    /// Writes the summary as pretty JSON, through a temporary file so that a reader never sees
    /// half of it.
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(write_json_atomically(path, self)?)
    }

    /// The machine the runs ran on, as the scope of the conclusions names it: the cluster's
    /// nodes and their kinds when the records name them (a Slurm matrix), else the machine
    /// of the summary, else this one.
    pub fn machine_of_runs(&self) -> String {
        let mut kinds: Vec<(String, Vec<String>)> = Vec::new();
        for node in self
            .records
            .iter()
            .filter_map(|record| record.node.as_ref())
        {
            match kinds.iter_mut().find(|(kind, _)| *kind == node.kind) {
                Some((_, names)) if names.contains(&node.name) => {}
                Some((_, names)) => names.push(node.name.clone()),
                None => kinds.push((node.kind.clone(), vec![node.name.clone()])),
            }
        }
        if kinds.is_empty() {
            return self
                .environment
                .as_ref()
                .map(|environment| environment.cpu_model.clone())
                .unwrap_or_else(cpu_model);
        }
        kinds
            .iter()
            .map(|(kind, names)| {
                let plural = if names.len() == 1 { "" } else { "s" };
                format!("Slurm node{plural} {}: {kind}", names.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Each backend's first record: what is the same over seeds (engine, version, ledger).
    pub(crate) fn one_per_backend(&self) -> Vec<&RunRecord> {
        let mut seen: Vec<&RunRecord> = Vec::new();
        for record in &self.records {
            if !seen.iter().any(|r| r.backend == record.backend) {
                seen.push(record);
            }
        }
        seen
    }

    /// Whether the records span more than one seed.
    pub(crate) fn several_seeds(&self) -> bool {
        self.seed_count() > 1
    }

    /// How many distinct seeds the records span.
    pub(crate) fn seed_count(&self) -> usize {
        let mut seeds: Vec<u64> = self.records.iter().map(|r| r.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        seeds.len()
    }

    /// A record's row label: its backend, with its seed when there are several, and its
    /// status when it did not complete.
    pub(crate) fn label(&self, record: &RunRecord) -> String {
        let mut label = record.backend.clone();
        if self.several_seeds() {
            label.push_str(&format!(" s{}", record.seed));
        }
        if record.status != RunStatus::Complete {
            label.push_str(" (incomplete)");
        }
        label
    }

    /// The machine's matrix-product peak in the comparison's precision: the best that any of
    /// the records' engines measured in this comparison ([`parallax_core::peak`]; a bf16
    /// comparison's runs measure a bf16 peak).
    pub(crate) fn matmul_peak(&self) -> Option<&MatmulPeak> {
        peak::best(self.records.iter().filter_map(|r| r.matmul_peak.as_ref()))
    }

    /// One line on the peak: the best engine's, then every engine's.
    pub(crate) fn matmul_peak_line(&self) -> Option<String> {
        let best = self.matmul_peak()?;
        let mut each: Vec<(String, f64)> = Vec::new();
        for peak in self.records.iter().filter_map(|r| r.matmul_peak.as_ref()) {
            match each
                .iter_mut()
                .find(|(backend, _)| *backend == peak.backend)
            {
                Some((_, gflops)) => *gflops = gflops.max(peak.gflops),
                None => each.push((peak.backend.clone(), peak.gflops)),
            }
        }
        let each: Vec<String> = each
            .iter()
            .map(|(backend, gflops)| format!("{backend} {gflops:.0}"))
            .collect();
        Some(format!(
            "{:.0} GFLOP/s through {} ({} {n}×{n} product, the best of {} timed; per engine: {})",
            best.gflops,
            best.backend,
            best.precision,
            best.repeats,
            each.join(", "),
            n = best.size
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed version-1 record's JSON.
    fn v1_record() -> serde_json::Value {
        let path = crate::workspace::repo_root().join("fixtures/records/v1-tch-mlp.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// A summary as parallax wrote it before summaries had a version: no `summary_version`,
    /// and a version-1 record in the comparison and in a repeat.
    fn unversioned() -> serde_json::Value {
        let mut value = serde_json::to_value(Summary::default()).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("summary_version");
        object.insert("records".into(), vec![v1_record()].into());
        object.insert(
            "other_runs".into(),
            serde_json::json!([{"configuration": "repeat", "record": v1_record()}]),
        );
        value
    }

    #[test]
    fn a_summary_without_a_version_reads_as_version_1_with_its_records_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        std::fs::write(&path, unversioned().to_string()).unwrap();
        let summary = Summary::load(&path).unwrap();
        assert_eq!(summary.summary_version, SummaryVersion(SUMMARY_VERSION));
        let records = summary
            .records
            .iter()
            .chain(summary.other_runs.iter().map(|tagged| &tagged.record));
        for record in records {
            assert_eq!(record.record_version, parallax_core::record::RECORD_VERSION);
            assert_eq!(record.backend, "tch");
        }
        assert_eq!(summary.other_runs.len(), 1);
        // What this parallax writes reads back as it was.
        summary.save(&path).unwrap();
        let again = Summary::load(&path).unwrap();
        assert_eq!(again.records, summary.records);
        assert_eq!(Summary::default().summary_version.0, SUMMARY_VERSION);
    }

    /// Engines that agree exactly give verdicts whose paired t is 0/0: the summary still reads
    /// back (it once wrote NaN as JSON's null, which no f64 reads).
    #[test]
    fn a_summary_of_identical_runs_reads_back() {
        let mut records = crate::report::tests::records(&[1, 2, 3]);
        let first = records[0].backend.clone();
        let copies: Vec<RunRecord> = records
            .iter()
            .filter(|record| record.backend == first)
            .map(|record| RunRecord {
                backend: "twin".into(),
                ..record.clone()
            })
            .collect();
        records.extend(copies);
        let summary = crate::report::tests::summary_of(records);
        let identical = summary
            .comparison
            .as_ref()
            .unwrap()
            .verdicts
            .iter()
            .find(|verdict| verdict.b == "twin" || verdict.a == "twin")
            .unwrap();
        assert!(identical.paired.t.is_nan(), "{:?}", identical.paired);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        summary.save(&path).unwrap();
        let read = Summary::load(&path).unwrap();
        let verdicts = &read.comparison.unwrap().verdicts;
        assert!(verdicts.iter().any(|verdict| verdict.paired.t.is_nan()));
    }

    #[test]
    fn a_newer_or_broken_summary_fails_in_one_line_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        let mut newer = unversioned();
        newer["summary_version"] = (SUMMARY_VERSION + 1).into();
        std::fs::write(&path, newer.to_string()).unwrap();
        let line = parallax_core::error::one_line(&Summary::load(&path).unwrap_err());
        assert!(line.contains("is not a comparison's summary"), "{line}");
        assert!(line.ends_with("update parallax"), "{line}");

        let truncated = unversioned().to_string();
        std::fs::write(&path, &truncated[..truncated.len() / 2]).unwrap();
        let line = parallax_core::error::one_line(&Summary::load(&path).unwrap_err());
        assert!(line.contains("EOF"), "{line}");

        let mut broken = unversioned();
        broken["records"][0]["record_version"] = 99.into();
        std::fs::write(&path, broken.to_string()).unwrap();
        let line = parallax_core::error::one_line(&Summary::load(&path).unwrap_err());
        assert!(line.contains("record version 99 is newer"), "{line}");

        std::fs::write(&path, "{}").unwrap();
        let line = parallax_core::error::one_line(&GradCamSummary::load(&path).unwrap_err());
        assert!(line.contains("is not a GradCAM summary"), "{line}");
    }
}
