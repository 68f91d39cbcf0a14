//! The matrix of runs a comparison makes: backends × seeds (with the engines' order rotating
//! from seed to seed), the configurations of an attribution, and the repeats of `--repeat`,
//! each with the directory its files go to.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use parallax_core::Factor;
use parallax_core::layout::Layout;
use parallax_core::record::RunRequest;
use parallax_core::stats::attribution::Configuration;
use parallax_registry::BackendEntry;

/// The seeds of `--seeds`: a count N (seeds 1..=N) or a comma-separated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeds(pub Vec<u64>);

impl FromStr for Seeds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |part: &str| {
            part.trim().parse::<u64>().map_err(|_| {
                format!("--seeds takes a count or a comma-separated list of seeds, got {text:?}")
            })
        };
        if !text.contains(',') {
            let count = number(text)?;
            if count == 0 {
                return Err("--seeds 0 runs nothing: give a count of at least 1 (3 or more for verdicts), or a list of seeds".into());
            }
            return Ok(Seeds((1..=count).collect()));
        }
        let seeds = text
            .split(',')
            .map(number)
            .collect::<Result<Vec<u64>, _>>()?;
        let distinct: BTreeSet<u64> = seeds.iter().copied().collect();
        if distinct.len() != seeds.len() {
            return Err(format!(
                "--seeds {text} repeats a seed; each seed is one replicate, so list each once"
            ));
        }
        Ok(Seeds(seeds))
    }
}

/// The pair of `--attribute A,B`.
#[derive(Clone, Debug)]
pub struct AttributePair {
    /// The engine that stays controlled.
    pub a: &'static BackendEntry,
    /// The engine whose defaults are switched one at a time.
    pub b: &'static BackendEntry,
}

/// One run of the matrix.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// The request.
    pub request: RunRequest,
    /// Its backend.
    pub entry: &'static BackendEntry,
    /// Where its files go: the output directory, or one of its configuration subdirectories.
    pub layout: Layout,
    /// Which part of the comparison it belongs to.
    pub role: Role,
}

/// What a run is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A run of the comparison itself (in an attribution, C0's).
    Main,
    /// A run of an attribution configuration other than C0.
    Attribution(Configuration),
    /// The second run of a seed, for `--repeat`.
    Repeat,
}

impl PlannedRun {
    /// A label for progress lines: the backend, the seed and the configuration.
    pub fn label(&self) -> String {
        match self.role {
            Role::Main => format!("{} seed {}", self.entry.name, self.request.seed),
            Role::Attribution(configuration) => format!(
                "{} seed {} [{}]",
                self.entry.name,
                self.request.seed,
                configuration.key()
            ),
            Role::Repeat => format!("{} seed {} (repeat)", self.entry.name, self.request.seed),
        }
    }
}

/// The runs of one seed in the order they run: `runs` rotated by the seed's position, so that
/// drift in the machine's speed hits every engine alike.
fn rotated<T>(mut runs: Vec<T>, position: usize) -> Vec<T> {
    if !runs.is_empty() {
        let shift = position % runs.len();
        runs.rotate_left(shift);
    }
    runs
}

/// The matrix: per seed, every backend (rotated), then for `--repeat` each backend again on the
/// first seed.
///
/// `template` gives each backend's request (already with its seed-independent settings);
/// `native` are the factors of `--defaults`.
pub fn plan(
    backends: &[&'static BackendEntry],
    seeds: &[u64],
    template: &dyn Fn(&'static BackendEntry, u64, BTreeSet<Factor>) -> RunRequest,
    native: &BTreeSet<Factor>,
    out: &Path,
    repeat: bool,
) -> Vec<PlannedRun> {
    let layout = Layout::new(out);
    let mut runs = Vec::new();
    for (position, &seed) in seeds.iter().enumerate() {
        let of_seed = backends
            .iter()
            .map(|&entry| {
                let mut request = template(entry, seed, native.clone());
                // The repeat compares final weights, so the first seed keeps them.
                request.save_weights |= repeat && position == 0;
                PlannedRun {
                    request,
                    entry,
                    layout: layout.clone(),
                    role: Role::Main,
                }
            })
            .collect();
        runs.extend(rotated(of_seed, position));
    }
    if repeat && let Some(&first) = seeds.first() {
        let again = Layout::new(out.join("repeat"));
        for &entry in backends {
            let mut request = template(entry, first, native.clone());
            request.save_weights = true;
            runs.push(PlannedRun {
                request,
                entry,
                layout: again.clone(),
                role: Role::Repeat,
            });
        }
    }
    runs
}

/// The attribution design for `pair`: per seed, A and B controlled (C0, in the output
/// directory itself), B with each factor native (C_f, A's C0 runs serve there), and both
/// native (C_n); each configuration but C0 in its own subdirectory, the seed's runs rotated.
pub fn attribution_plan(
    pair: &AttributePair,
    seeds: &[u64],
    template: &dyn Fn(&'static BackendEntry, u64, BTreeSet<Factor>) -> RunRequest,
    out: &Path,
) -> Vec<PlannedRun> {
    let mut runs = Vec::new();
    for (position, &seed) in seeds.iter().enumerate() {
        let mut of_seed = Vec::new();
        for configuration in Configuration::all() {
            let (layout, role) = match configuration {
                Configuration::Controlled => (Layout::new(out), Role::Main),
                other => (Layout::new(out.join(other.key())), Role::Attribution(other)),
            };
            let (a_factors, b_factors): (Option<BTreeSet<Factor>>, BTreeSet<Factor>) =
                match configuration {
                    Configuration::Controlled => (Some(BTreeSet::new()), BTreeSet::new()),
                    Configuration::Factor(factor) => (None, BTreeSet::from([factor])),
                    Configuration::Native => (
                        Some(Factor::ALL.into_iter().collect()),
                        Factor::ALL.into_iter().collect(),
                    ),
                };
            if let Some(factors) = a_factors {
                of_seed.push(PlannedRun {
                    request: template(pair.a, seed, factors),
                    entry: pair.a,
                    layout: layout.clone(),
                    role,
                });
            }
            of_seed.push(PlannedRun {
                request: template(pair.b, seed, b_factors),
                entry: pair.b,
                layout,
                role,
            });
        }
        runs.extend(rotated(of_seed, position));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_a_count_or_a_list() {
        assert_eq!("3".parse::<Seeds>().unwrap(), Seeds(vec![1, 2, 3]));
        assert_eq!("7,3,11".parse::<Seeds>().unwrap(), Seeds(vec![7, 3, 11]));
        assert!("0".parse::<Seeds>().unwrap_err().contains("--seeds 0"));
        assert!("1,1".parse::<Seeds>().unwrap_err().contains("repeats"));
        assert!("three".parse::<Seeds>().is_err());
    }

    #[test]
    fn the_order_of_engines_rotates_from_seed_to_seed() {
        assert_eq!(rotated(vec!['a', 'b', 'c'], 0), vec!['a', 'b', 'c']);
        assert_eq!(rotated(vec!['a', 'b', 'c'], 1), vec!['b', 'c', 'a']);
        assert_eq!(rotated(vec!['a', 'b', 'c'], 4), vec!['b', 'c', 'a']);
        assert!(rotated(Vec::<u8>::new(), 3).is_empty());
    }
}
