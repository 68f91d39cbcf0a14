//! The fairness ledger: on a closed set of topics, what each engine does by default and what
//! parallax does instead, so that a comparison says where the frameworks differ.
//!
//! Adapters fill it with [`Ledger::from_fn`] and a `match` over [`Topic`] without a catch-all
//! arm, so a new topic fails to compile in every adapter until each says what it does; the
//! conformance suite checks that every topic has an entry, and the report renders one table,
//! topic by backend.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a ledger entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// The engine's default initial weights, against the shared canonical ones.
    Initialisation,
    /// The optimizer's default ε.
    OptimizerEpsilon,
    /// How the engine's optimizers are written (where Adam's ε enters, SGD's dampening).
    OptimizerFormulation,
    /// Batch norm's default momentum and its convention.
    BatchNormMomentum,
    /// Batch norm's default ε.
    BatchNormEpsilon,
    /// Whether the running variance is updated with the biased or the unbiased batch variance.
    BatchNormRunningVariance,
    /// How "same" and explicit padding are computed.
    Padding,
    /// Activation and weight layouts, and what is converted at the boundary.
    Layout,
    /// Whether subnormal floats are flushed to zero.
    Subnormals,
    /// Thread pools and how their threads wait.
    Threads,
    /// The cross-entropy's formulation.
    Loss,
}

impl Topic {
    /// Every topic, in the order the report lists them.
    pub const ALL: [Topic; 11] = [
        Topic::Initialisation,
        Topic::OptimizerEpsilon,
        Topic::OptimizerFormulation,
        Topic::BatchNormMomentum,
        Topic::BatchNormEpsilon,
        Topic::BatchNormRunningVariance,
        Topic::Padding,
        Topic::Layout,
        Topic::Subnormals,
        Topic::Threads,
        Topic::Loss,
    ];

    /// The topic as a table's row heading.
    pub fn title(self) -> &'static str {
        match self {
            Topic::Initialisation => "initialisation",
            Topic::OptimizerEpsilon => "optimizer ε",
            Topic::OptimizerFormulation => "optimizer formulation",
            Topic::BatchNormMomentum => "batch-norm momentum",
            Topic::BatchNormEpsilon => "batch-norm ε",
            Topic::BatchNormRunningVariance => "batch-norm running variance",
            Topic::Padding => "padding",
            Topic::Layout => "layout",
            Topic::Subnormals => "subnormals",
            Topic::Threads => "threads",
            Topic::Loss => "loss",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// How a run's entry on a topic its defaults touch begins: what this run used, before what the
/// engine does by default ([`run_entry`]).
const THIS_RUN: &str = "this run: ";
/// What separates what this run used from the engine's default.
const ENGINE: &str = ". Engine: ";

/// A run's entry on a topic its defaults touch: what this run used, then what the engine does
/// by default. [`run_part`] reads it back.
pub fn run_entry(used: &str, engine_default: &str) -> String {
    format!("{THIS_RUN}{used}{ENGINE}{engine_default}")
}

/// What the run used, from an entry [`run_entry`] wrote, and what the engine does; `None` and
/// the whole entry for a topic the run's defaults do not touch.
pub fn run_part(entry: &str) -> (Option<&str>, &str) {
    entry
        .strip_prefix(THIS_RUN)
        .and_then(|rest| rest.split_once(ENGINE))
        .map_or((None, entry), |(used, engine)| (Some(used), engine))
}

/// One backend's ledger: an entry per topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ledger(BTreeMap<Topic, String>);

impl Ledger {
    /// A ledger with `entry(topic)` for every topic.
    pub fn from_fn(entry: impl Fn(Topic) -> String) -> Self {
        Ledger(
            Topic::ALL
                .into_iter()
                .map(|topic| (topic, entry(topic)))
                .collect(),
        )
    }

    /// The entry on `topic`, when there is one.
    pub fn get(&self, topic: Topic) -> Option<&str> {
        self.0.get(&topic).map(String::as_str)
    }

    /// Sets the entry on `topic`.
    pub fn insert(&mut self, topic: Topic, entry: impl Into<String>) {
        self.0.insert(topic, entry.into());
    }

    /// The topics without an entry, or with an empty one.
    pub fn missing(&self) -> Vec<Topic> {
        Topic::ALL
            .into_iter()
            .filter(|topic| self.get(*topic).is_none_or(str::is_empty))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_from_a_function_has_every_topic_and_serialises_by_name() {
        let ledger = Ledger::from_fn(|topic| format!("about {topic}"));
        assert!(ledger.missing().is_empty());
        let json = serde_json::to_value(&ledger).unwrap();
        assert_eq!(json["optimizer_epsilon"], "about optimizer ε");
        let back: Ledger = serde_json::from_value(json).unwrap();
        assert_eq!(back, ledger);
        assert_eq!(Ledger::default().missing().len(), Topic::ALL.len());
    }

    #[test]
    fn a_run_entry_reads_back_as_what_the_run_used_and_the_engine_default() {
        let entry = run_entry("1e-8 (controlled)", "Adam ε = 1e-7. Keras's");
        assert_eq!(
            run_part(&entry),
            (Some("1e-8 (controlled)"), "Adam ε = 1e-7. Keras's")
        );
        assert_eq!(run_part("NCHW. Engine: x"), (None, "NCHW. Engine: x"));
    }
}
