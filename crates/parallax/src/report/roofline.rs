//! The roofline section: each layer's FLOPs and bytes in one training step against the
//! machine's matrix-product peak and stream-copy bandwidth, both measured in the comparison
//! ([`parallax_core::roofline`]), and how far the fastest step sits from the floor they set.

use parallax_core::record::RunRecord;
use parallax_core::roofline::{Bound, Ceilings, LayerCost, LayerProfile, LayerTime};

use super::tables::table;
use super::{Summary, numbers};

/// Each backend's item whose `seconds` are least, in the order the backends first appear.
fn least_per_backend<'a, T>(
    items: impl Iterator<Item = (&'a String, T)>,
    seconds: impl Fn(&T) -> f64,
) -> Vec<(String, T)> {
    let mut kept: Vec<(String, T)> = Vec::new();
    for (backend, item) in items {
        match kept.iter_mut().find(|(name, _)| name == backend) {
            Some((_, least)) if seconds(least) <= seconds(&item) => {}
            Some((_, least)) => *least = item,
            None => kept.push((backend.clone(), item)),
        }
    }
    kept
}

/// The roofline of a comparison's model: its ceilings, its layers, and its fastest step.
pub(crate) struct Roofline {
    ceilings: Ceilings,
    costs: Vec<LayerCost>,
    batch: usize,
    model: String,
    /// The fastest training step of any run: its label and seconds (an epoch's seconds over
    /// its steps).
    fastest: Option<(String, f64)>,
    /// Each backend's layers timed one at a time (its run whose layers took least), in the
    /// order the records list the backends.
    measured: Vec<(String, Vec<LayerTime>)>,
    /// Each backend's layers inside whole training steps, as its engine's profiler attributes
    /// them (its run whose profiled layers took least), where the adapter reads one.
    profiled: Vec<(String, LayerProfile)>,
}

impl Roofline {
    /// The comparison's roofline, when its records carry layer costs, a peak and a bandwidth
    /// (runs that measured the peak measure the bandwidth beside it).
    pub(crate) fn of(summary: &Summary) -> Option<Roofline> {
        let peak = summary.matmul_peak()?;
        let bandwidth = summary
            .records
            .iter()
            .filter_map(|r| r.memory_bandwidth.as_ref())
            .map(|b| b.bytes_per_second)
            .filter(|b| b.is_finite() && *b > 0.0)
            .fold(None, |best: Option<f64>, b| {
                Some(best.map_or(b, |best| best.max(b)))
            })?;
        let first = summary.records.iter().find(|r| !r.layer_costs.is_empty())?;
        let fastest = summary
            .records
            .iter()
            .filter(|r| r.batch_size == first.batch_size && r.model == first.model)
            .flat_map(|r| {
                let steps = r.train_examples.div_ceil(r.batch_size.max(1)).max(1) as f64;
                r.epochs
                    .iter()
                    .map(move |epoch| (summary.label(r), epoch.seconds / steps))
            })
            .filter(|(_, seconds)| *seconds > 0.0)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let layers = first.layer_costs.len().saturating_sub(1);
        let same_model =
            |r: &&RunRecord| r.model == first.model && r.batch_size == first.batch_size;
        let measured = least_per_backend(
            summary.records.iter().filter(same_model).filter_map(|r| {
                (r.layer_times.len() == layers).then(|| (&r.backend, r.layer_times.clone()))
            }),
            |times| times.iter().map(LayerTime::total).sum(),
        );
        let profiled = least_per_backend(
            summary.records.iter().filter(same_model).filter_map(|r| {
                let profile = r.layer_profile.as_ref()?;
                (profile.layers.len() == layers).then(|| (&r.backend, profile.clone()))
            }),
            LayerProfile::total,
        );
        Some(Roofline {
            ceilings: Ceilings {
                flops_per_second: peak.gflops * 1e9,
                bytes_per_second: bandwidth,
            },
            costs: first.layer_costs.clone(),
            batch: first.batch_size,
            model: first.model.clone(),
            fastest,
            measured,
            profiled,
        })
    }

    /// The step's floor under both ceilings, seconds.
    fn floor(&self) -> f64 {
        self.ceilings.step_floor(&self.costs)
    }

    /// The share of the floor that layers bound by `bound` hold, and their names, the largest
    /// first (three at most).
    fn share(&self, bound: Bound) -> (f64, Vec<&str>) {
        let mut layers: Vec<(&str, f64)> = self
            .costs
            .iter()
            .filter_map(|cost| {
                let (seconds, holds) = self.ceilings.floor(cost);
                (holds == bound && seconds > 0.0).then_some((cost.name.as_str(), seconds))
            })
            .collect();
        layers.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = layers.iter().map(|(_, s)| s).sum();
        (
            total / self.floor().max(f64::MIN_POSITIVE),
            layers.iter().take(3).map(|(name, _)| *name).collect(),
        )
    }

    /// The answer in words: the floor, what holds it, and the fastest step against it.
    pub(crate) fn answer(&self) -> String {
        let floor = self.floor();
        let (memory, memory_layers) = self.share(Bound::Memory);
        let (compute, compute_layers) = self.share(Bound::Compute);
        let named = |layers: &[&str]| {
            if layers.is_empty() {
                String::new()
            } else {
                format!(" ({})", layers.join(", "))
            }
        };
        let mut text = format!(
            "At batch {}, the roofline puts a training step of {} at {} or more: {:.0}% of that floor in memory-bound layers{}, {:.0}% in compute-bound ones{}.",
            self.batch,
            self.model,
            numbers::seconds(floor),
            100.0 * memory,
            named(&memory_layers),
            100.0 * compute,
            named(&compute_layers),
        );
        if let Some(sentence) = self.measured_sentence() {
            text.push(' ');
            text.push_str(&sentence);
        }
        for sentence in self.profiled_sentences() {
            text.push(' ');
            text.push_str(&sentence);
        }
        if let Some((label, seconds)) = &self.fastest {
            text.push_str(&format!(
                " The fastest step, {label}'s, took {}: {:.1}× the floor; the rest of its time is kernels below their ceiling and what the engine does between them.",
                numbers::seconds(*seconds),
                seconds / floor.max(f64::MIN_POSITIVE),
            ));
        }
        text
    }

    /// The backend whose layers took least, timed one at a time, against their floors: the
    /// layers furthest from theirs.
    fn measured_sentence(&self) -> Option<String> {
        let (backend, times) = self.measured.iter().min_by(|a, b| {
            let total = |times: &[LayerTime]| times.iter().map(LayerTime::total).sum::<f64>();
            total(&a.1).total_cmp(&total(&b.1))
        })?;
        let total: f64 = times.iter().map(LayerTime::total).sum();
        let floors: f64 = self
            .costs
            .iter()
            .zip(times)
            .map(|(cost, _)| self.ceilings.floor(cost).0)
            .sum();
        let mut furthest: Vec<(&str, f64, f64)> = self
            .costs
            .iter()
            .zip(times)
            .filter_map(|(cost, time)| {
                let floor = self.ceilings.floor(cost).0;
                (floor > 0.0).then(|| {
                    (
                        cost.name.as_str(),
                        time.total() - floor,
                        time.total() / floor,
                    )
                })
            })
            .collect();
        furthest.sort_by(|a, b| b.1.total_cmp(&a.1));
        let named: Vec<String> = furthest
            .iter()
            .take(3)
            .map(|(name, _, ratio)| format!("{name} {ratio:.1}×"))
            .collect();
        Some(format!(
            "Timed one at a time, {backend}'s layers took {} in all, {:.1}× their floors; the most time above its floor went to {}.",
            numbers::seconds(total),
            total / floors.max(f64::MIN_POSITIVE),
            named.join(", "),
        ))
    }

    /// Each profiled backend's layers in whole steps, against the same layers timed one at a
    /// time where the backend timed them too: the layers that a real step slows most.
    fn profiled_sentences(&self) -> Vec<String> {
        self.profiled
            .iter()
            .map(|(backend, profile)| {
                let total = profile.total();
                let mut sentence = format!(
                    "In whole training steps, {} put {backend}'s layers at {}",
                    profile.profiler,
                    numbers::seconds(total)
                );
                let alone = self.measured.iter().find(|(name, _)| name == backend);
                if let Some((_, times)) = alone {
                    let alone_total: f64 = times.iter().map(LayerTime::total).sum();
                    let mut slowed: Vec<(&str, f64)> = self
                        .costs
                        .iter()
                        .zip(profile.layers.iter().zip(times))
                        .map(|(cost, (step, alone))| {
                            (cost.name.as_str(), step.total() - alone.total())
                        })
                        .filter(|(_, extra)| *extra > 0.0)
                        .collect();
                    slowed.sort_by(|a, b| b.1.total_cmp(&a.1));
                    sentence.push_str(&format!(
                        ", {:.2}× the same layers timed one at a time",
                        total / alone_total.max(f64::MIN_POSITIVE)
                    ));
                    if !slowed.is_empty() {
                        let named: Vec<String> = slowed
                            .iter()
                            .take(3)
                            .map(|(name, extra)| format!("{name} (+{})", numbers::seconds(*extra)))
                            .collect();
                        sentence.push_str(&format!(
                            "; the layers a step slowed most: {}",
                            named.join(", ")
                        ));
                    }
                }
                sentence.push('.');
                sentence
            })
            .collect()
    }

    /// The table's header: the estimates, then each measured backend's layers.
    pub(crate) fn header(&self) -> Vec<String> {
        let mut header: Vec<String> = Self::HEADER.iter().map(|h| h.to_string()).collect();
        for (backend, _) in &self.measured {
            header.push(format!("{backend} fwd + bwd"));
        }
        for (backend, profile) in &self.profiled {
            header.push(format!("{backend} in a step ({})", profile.profiler));
        }
        header
    }

    /// The table's header.
    const HEADER: &[&str] = &[
        "layer", "kind", "MFLOP", "MB moved", "FLOP/B", "bound", "floor", "of floor",
    ];

    /// One row per layer, then the optimizer's.
    pub(crate) fn rows(&self) -> Vec<Vec<String>> {
        let floor = self.floor();
        self.costs
            .iter()
            .enumerate()
            .map(|(index, cost)| {
                let (seconds, bound) = self.ceilings.floor(cost);
                let passes = |time: Option<&LayerTime>| {
                    time.map_or("—".to_string(), |time| {
                        format!(
                            "{} + {}",
                            numbers::seconds(time.forward),
                            numbers::seconds(time.backward)
                        )
                    })
                };
                let measured = self
                    .measured
                    .iter()
                    .map(|(_, times)| passes(times.get(index)))
                    .chain(
                        self.profiled
                            .iter()
                            .map(|(_, profile)| passes(profile.layers.get(index))),
                    );
                let mut row = vec![
                    cost.name.clone(),
                    cost.kind.clone(),
                    numbers::significant(cost.flops() as f64 / 1e6, 3),
                    numbers::significant(cost.bytes() as f64 / 1e6, 3),
                    numbers::significant(cost.intensity(), 3),
                    if cost.flops() == 0 && cost.bytes() == 0 {
                        "—".into()
                    } else {
                        bound.to_string()
                    },
                    numbers::seconds(seconds),
                    format!("{:.0}%", 100.0 * seconds / floor.max(f64::MIN_POSITIVE)),
                ];
                row.extend(measured);
                row
            })
            .collect()
    }

    /// What the table shows and how the ceilings were measured.
    pub(crate) fn method(&self) -> String {
        let mut text = format!(
            "The ceilings, measured in this comparison: {} GFLOP/s of matrix products and {} GB/s of stream copy, so a layer needs {} FLOP per byte to be bound by compute. Each layer's FLOPs are counted from the spec and its bytes estimated from its tensors' sizes (each tensor crosses memory once per pass; caches ignored); its floor is the slower of its FLOPs at the peak and its bytes at the bandwidth. {}",
            numbers::whole(self.ceilings.flops_per_second / 1e9),
            numbers::significant(self.ceilings.bytes_per_second / 1e9, 3),
            numbers::significant(
                self.ceilings.flops_per_second / self.ceilings.bytes_per_second,
                3
            ),
            if self.measured.is_empty() {
                "No engine of this comparison timed its layers one at a time.".to_string()
            } else {
                format!(
                    "The last columns are each layer's forward and backward pass timed on its own after training, at the same batch, on the engines that can run their layers one at a time ({}): medians of {} repeats.",
                    self.measured
                        .iter()
                        .map(|(backend, _)| backend.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    parallax_core::roofline::LAYER_REPEATS
                )
            },
        );
        for (backend, profile) in &self.profiled {
            text.push_str(&format!(
                " The {backend} in a step column is the same batch in whole training steps under {}: each layer's forward operations and the backward operations its engine derived from them (each parameter's gradient accumulation, which the profiler ties to no layer, left out), medians of {} steps after a warm-up; the profiler adds its own cost to every operation it records.",
                profile.profiler, profile.steps
            ));
        }
        text
    }

    /// The section of `report.md`.
    pub(crate) fn markdown(&self) -> String {
        format!(
            "## Roofline\n\n{}\n\n{}\n\n{}",
            self.answer(),
            self.method(),
            table(
                &self.header().iter().map(String::as_str).collect::<Vec<_>>(),
                self.rows(),
                comfy_table::presets::ASCII_MARKDOWN
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::markdown;
    use super::super::tests::{records, setup, summary_of};
    use super::*;
    use parallax_core::OptimizerKind;
    use parallax_core::peak::MatmulPeak;
    use parallax_core::roofline::MemoryBandwidth;
    use parallax_core::spec::presets;

    #[test]
    fn the_roofline_names_what_holds_the_step_and_the_fastest_step_against_it() {
        let mut records = records(&[7]);
        // Without costs, a peak or a bandwidth there is no section.
        assert!(!markdown(&summary_of(records.clone()), &setup()).contains("## Roofline"));
        let model = presets::mlp([1, 28, 28], 10).resolve().unwrap();
        let costs = parallax_core::roofline::layer_costs(
            &model,
            records[0].batch_size,
            &OptimizerKind::Sgd { momentum: 0.0 },
        );
        for record in &mut records {
            record.layer_costs = costs.clone();
            record.matmul_peak = Some(MatmulPeak {
                backend: record.backend.clone(),
                size: 2048,
                repeats: 5,
                best_seconds: 0.1,
                median_seconds: 0.1,
                gflops: 100.0,
                precision: parallax_core::Precision::F32,
            });
        }
        assert!(!markdown(&summary_of(records.clone()), &setup()).contains("## Roofline"));
        for record in &mut records {
            record.memory_bandwidth = Some(MemoryBandwidth {
                bytes_per_second: 10e9,
                buffer_bytes: 256 << 20,
                threads: 2,
                repeats: 5,
            });
        }
        let summary = summary_of(records.clone());
        let roofline = Roofline::of(&summary).expect("a roofline");
        // The ridge is 100 GFLOP/s over 10 GB/s: 10 FLOP per byte. A dense layer at batch 64
        // does about 2·64·784·128 FLOPs over 4·(64·912 + 100,480) bytes, near 17: compute.
        // ReLU does 2 FLOPs per 12 bytes or more: memory.
        let text = roofline.markdown();
        assert!(text.starts_with("## Roofline\n\nAt batch "), "{text}");
        assert!(text.contains("| relu"), "{text}");
        let relu_row = text.lines().find(|l| l.starts_with("| relu")).unwrap();
        assert!(relu_row.contains("memory"), "{relu_row}");
        let dense_row = text
            .lines()
            .find(|l| l.contains("| dense"))
            .expect("a dense row");
        assert!(dense_row.contains("compute"), "{dense_row}");
        assert!(text.contains("10.0 FLOP per byte"), "{text}");
        // Flattening is a view: no bytes, no floor.
        let flatten_row = text.lines().find(|l| l.contains("| flatten")).unwrap();
        assert!(flatten_row.contains("| 0 "), "{flatten_row}");
        // The fastest step is tch's first epoch over its steps.
        let record = &records[0];
        let steps = record.train_examples.div_ceil(record.batch_size) as f64;
        let fastest = records
            .iter()
            .flat_map(|r| r.epochs.iter().map(|e| e.seconds / steps))
            .fold(f64::INFINITY, f64::min);
        let floor = Ceilings {
            flops_per_second: 100e9,
            bytes_per_second: 10e9,
        }
        .step_floor(&costs);
        assert!(
            text.contains(&format!("{:.1}× the floor", fastest / floor)),
            "{text}"
        );
        assert!(
            markdown(&summary, &setup()).contains(&roofline.answer()),
            "the report carries the section"
        );
        assert!(text.contains("No engine of this comparison timed its layers"));

        // tch's layers timed one at a time: its column, and the layer furthest from its floor.
        let times = [0.001, 0.002, 0.001, 0.0005]
            .map(|seconds| LayerTime {
                forward: seconds,
                backward: seconds,
            })
            .to_vec();
        records[0].layer_times = times;
        let roofline = Roofline::of(&summary_of(records.clone())).expect("a roofline");
        let text = roofline.markdown();
        assert!(text.contains("| tch fwd + bwd"), "{text}");
        assert!(text.contains("1.00 ms + 1.00 ms"), "{text}");
        assert!(
            text.contains("Timed one at a time, tch's layers took 9.00 ms in all")
                && text.contains("the most time above its floor went to fc1"),
            "{text}"
        );
        assert!(!text.contains("in a step"), "no profile, no column: {text}");

        // tch's layers in whole steps under a profiler: its column, and the layer a step
        // slowed most against its time alone.
        let mut step_times = records[0].layer_times.clone();
        step_times[2].forward = 0.004;
        records[0].layer_profile = Some(LayerProfile {
            profiler: "a profiler".into(),
            steps: 5,
            layers: step_times,
        });
        let text = Roofline::of(&summary_of(records))
            .expect("a roofline")
            .markdown();
        assert!(text.contains("| tch in a step (a profiler)"), "{text}");
        assert!(text.contains("4.00 ms + 1.00 ms"), "{text}");
        let layer = &costs[2].name;
        assert!(
            text.contains(
                "In whole training steps, a profiler put tch's layers at 12.0 ms, 1.33× the same layers timed one at a time"
            ) && text.contains(&format!("the layers a step slowed most: {layer} (+3.00 ms)")),
            "{text}"
        );
        assert!(text.contains("medians of 5 steps"), "{text}");
    }
}
