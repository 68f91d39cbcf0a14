//! `cargo xtask compare --slurm`: the comparison's matrix as one Slurm job array, one task per
//! run. Slurm schedules; parallax writes the requests, builds the workers, submits, follows and
//! merges.
//!
//! The submitting machine writes everything a task needs under `OUT/slurm/`: the matrix
//! (`matrix.json`: the flags, the tasks, each submission's job id), one line per task
//! (`tasks.tsv`: worker, request and its digest, record, weights), copies of the workers
//! (`bin/`, so that a later build here cannot change a binary that a queued task will run) and
//! the job script (`job.sh`). A task reads its line, sets up the worker's environment and
//! `exec`s the worker, whose record lands in `OUT/records/` as in a local run, and whose
//! output goes to `OUT/slurm/logs/<job>-<task>.log`. That is the shared-filesystem assumption
//! of every HPC cluster: the output directory, the cache and the workers are visible to the
//! compute nodes at the same paths.
//!
//! Following reads `squeue` and the records as they appear. When no task is queued or running
//! any more, each run without a complete record gets its task's state, exit code and error
//! line (from `scontrol`, the record and the task's log), and the records merge into the same
//! `summary.json`, `report.md` and `report.html` as a local run's. `--resume DIR` follows what
//! is still queued, resubmits what is neither complete nor queued, and merges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use parallax_core::Device;
use parallax_core::layout::Layout;
use parallax_core::record::{RunRecord, RunStatus, write_json_atomically};
use serde::{Deserialize, Serialize};

use super::{Args, Checked, Flags, PlannedRun, check, conclude, file_outcome, make_ready, planned};
use crate::error::{Error, Result};
use crate::output_lock::OutputLock;
use crate::report::Summary;

/// The version of `matrix.json`'s layout.
const MATRIX_VERSION: u32 = 1;

/// How long one call of a Slurm client may take: a controller that does not answer makes
/// them retry for about 9 s before failing.
const CLIENT_TIMEOUT: &str = "30";

/// How often the follower looks at the queue and the records.
const POLL: Duration = Duration::from_secs(2);

/// How long the follower keeps trying when `squeue` fails before it gives up (the job goes on).
const LOST_CONTACT: Duration = Duration::from_secs(120);

/// One run of the matrix, as a task of the job array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The array index: the task's line in `tasks.tsv`, counting from 0.
    pub index: usize,
    /// The run as progress lines name it (`tch seed 2`).
    pub label: String,
    /// The model's directory under the output directory, or `None` for a single model.
    pub model_dir: Option<String>,
    /// The backend.
    pub backend: String,
    /// The worker binary (a copy under `OUT/slurm/bin/`).
    pub worker: PathBuf,
    /// The run request, and the SHA-256 of its text.
    pub request: PathBuf,
    pub request_sha256: String,
    /// Where the worker writes its record and weights.
    pub record: PathBuf,
    pub weights: PathBuf,
}

/// One `sbatch` of some of the matrix's tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// Slurm's job id of the array.
    pub job_id: String,
    /// The array indices it submitted.
    pub indices: Vec<usize>,
}

/// `OUT/slurm/matrix.json`: what `--resume` and the merge need to find again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// [`MATRIX_VERSION`].
    pub matrix_version: u32,
    /// The `compare` flags that made it, with the threads resolved, as clap parses them.
    pub flags: Vec<String>,
    /// The tasks, in array order.
    pub tasks: Vec<Task>,
    /// Every submission, in order; a task's latest is the one that counts.
    pub submissions: Vec<Submission>,
}

/// The files under `OUT/slurm/`.
struct SlurmDir {
    root: PathBuf,
}

impl SlurmDir {
    fn new(out: &Path) -> Self {
        SlurmDir {
            root: out.join("slurm"),
        }
    }
    fn matrix(&self) -> PathBuf {
        self.root.join("matrix.json")
    }
    fn tasks(&self) -> PathBuf {
        self.root.join("tasks.tsv")
    }
    fn script(&self) -> PathBuf {
        self.root.join("job.sh")
    }
    fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }
    fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The log of `index`'s task in the array `job_id`, as the job script's `--output` names it.
    fn log(&self, job_id: &str, index: usize) -> PathBuf {
        self.logs().join(format!("{job_id}-{index}.log"))
    }
}

impl Matrix {
    fn load(out: &Path) -> Result<Self> {
        let path = SlurmDir::new(out).matrix();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Slurm(format!(
                    "{} holds no Slurm matrix (no {}); --resume takes the --out DIR of an earlier `cargo xtask compare --slurm`",
                    out.display(),
                    path.display()
                )));
            }
            Err(error) => {
                return Err(Error::io("reading", &path, error));
            }
        };
        let matrix: Matrix = serde_json::from_str(&text).map_err(|error| Error::Format {
            path: path.clone(),
            what: "a Slurm matrix",
            message: error.to_string(),
        })?;
        if matrix.matrix_version != MATRIX_VERSION {
            return Err(Error::Slurm(format!(
                "{} has matrix version {}, and this parallax reads {MATRIX_VERSION}; resume it with the parallax that wrote it",
                path.display(),
                matrix.matrix_version
            )));
        }
        Ok(matrix)
    }

    fn save(&self, out: &Path) -> Result<()> {
        Ok(write_json_atomically(&SlurmDir::new(out).matrix(), self)?)
    }

    /// The job id of the latest submission of `index`.
    fn job_of(&self, index: usize) -> Option<&str> {
        self.submissions
            .iter()
            .rev()
            .find(|submission| submission.indices.contains(&index))
            .map(|submission| submission.job_id.as_str())
    }
}

/// A Slurm client program found on `PATH`, run under a time limit.
fn client(program: &str) -> Result<Command> {
    client_in(program, std::env::var_os("PATH").as_deref())
}

/// [`client`], looked up in the directories of `path_var`.
fn client_in(program: &str, path_var: Option<&std::ffi::OsStr>) -> Result<Command> {
    let path = find_program(program, path_var).ok_or_else(|| {
        Error::Slurm(format!(
            "--slurm needs Slurm's `{program}` on PATH, and there is none here: run on the cluster's login node, or leave out --slurm to run here"
        ))
    })?;
    let mut command = Command::new("timeout");
    command.arg(CLIENT_TIMEOUT).arg(path);
    Ok(command)
}

/// `program`'s path in the directories of `path_var`.
fn find_program(program: &str, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|meta| {
                meta.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
            })
        })
}

/// Runs a client command and returns its stdout, or its stderr's message as the error.
fn output_of(mut command: Command) -> Result<String> {
    let output = command
        .output()
        .map_err(|source| Error::process(format!("running {command:?}"), source))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .rev()
            .map(|line| line.trim().trim_start_matches("sbatch: error: "))
            .find(|line| !line.is_empty())
            .unwrap_or("no message");
        if output.status.code() == Some(124) {
            return Err(Error::Slurm(format!(
                "timed out after {CLIENT_TIMEOUT} s: {message}"
            )));
        }
        return Err(Error::Slurm(message.to_string()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `compare --slurm`: submits the matrix, or with `--resume` takes an earlier one up again,
/// then follows it and merges, unless `--no-wait`.
pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    // sbatch first: a machine without Slurm fails before anything is built or written.
    client("sbatch")?;
    let slurm_args = match &args.slurm_args {
        Some(text) => shlex::split(text).ok_or_else(|| {
            Error::Invalid(format!(
                "--slurm-args {text:?} does not split as a shell would (an unclosed quote?)"
            ))
        })?,
        None => Vec::new(),
    };
    // The output directory's lock is held until the merge is written, as a local run holds it.
    let (out, (matrix, _lock)) = match &args.resume {
        Some(dir) => (dir.clone(), resume(dir, &args, &slurm_args)?),
        None => (args.out.clone(), submit(&args, &slurm_args)?),
    };
    if args.no_wait {
        let job = matrix
            .submissions
            .last()
            .map_or("(none: every run is complete)", |s| s.job_id.as_str());
        println!(
            "submitted Slurm job {job}; follow it with `squeue -j {job}`, and follow and merge it with `cargo xtask compare --slurm --resume {}` (which also resubmits runs that failed)",
            out.display()
        );
        return Ok(());
    }
    follow(&out, &matrix)?;
    merge(&out, &matrix, started)
}

/// The flags of a matrix, parsed again; the flags of the resuming command override its Slurm
/// arguments.
fn saved_args(matrix: &Matrix, out: &Path) -> Result<Args> {
    let flags = Flags::try_parse_from(std::iter::once("compare".to_string()).chain(matrix.flags.iter().cloned()))
        .map_err(|error| Error::Slurm(format!("the matrix's flags no longer parse ({}); start it afresh with `cargo xtask compare --slurm`", error.to_string().lines().next().unwrap_or(""))))?;
    Ok(Args {
        out: out.to_path_buf(),
        resume: None,
        ..flags.args
    })
}

/// This command's `compare` flags as typed, with `--threads` made explicit (a later
/// `--resume` must not take another machine's core count) and without `--resume`.
fn flags_of(args: &Args, threads: usize) -> Vec<String> {
    let mut typed: Vec<String> = std::env::args()
        .skip_while(|arg| arg != "compare")
        .skip(1)
        .collect();
    if args.threads.is_none() {
        typed.extend(["--threads".to_string(), threads.to_string()]);
    }
    typed
}

/// The comparisons of the matrix: one per model, each checked.
fn comparisons(args: &Args) -> Result<Vec<(Args, Checked)>> {
    args.per_comparison()
        .into_iter()
        .map(|one| {
            let checked = check(&one)?;
            Ok((one, checked))
        })
        .collect()
}

/// Writes the requests, builds and copies the workers, writes the job script and submits
/// every run as one array.
fn submit(args: &Args, slurm_args: &[String]) -> Result<(Matrix, OutputLock)> {
    let comparisons = comparisons(args)?;
    let lock = OutputLock::acquire(&args.out)?;
    let dir = SlurmDir::new(&args.out);
    for sub in [dir.bin(), dir.logs()] {
        std::fs::create_dir_all(&sub).map_err(|source| Error::io("creating", &sub, source))?;
    }
    let threads = comparisons[0].1.base.threads;
    let mut tasks = Vec::new();
    let mut native = None;
    let mut copied = BTreeSet::new();
    for (one, checked) in &comparisons {
        let ready = make_ready(one, checked)?;
        super::start_directory(&Layout::new(&one.out), &ready.runs)?;
        let model_dir = (args.model.len() > 1).then(|| one.model().key());
        for run in &ready.runs {
            let built = &ready.workers[run.entry.name];
            let worker = dir.bin().join(built.file_name().ok_or_else(|| {
                Error::Build(format!("{} is not a worker's file", built.display()))
            })?);
            // A fresh copy, made beside any older one rather than over it: a task of an
            // earlier job may still be running the older binary.
            if !copied.contains(&worker) {
                let _ = std::fs::remove_file(&worker);
                std::fs::copy(built, &worker)
                    .map_err(|source| Error::io("copying the worker to", &worker, source))?;
                copied.insert(worker.clone());
            }
            let id = run.request.id();
            let request = run.layout.request(&id);
            let request_sha256 = run.request.save(&request)?;
            tasks.push(Task {
                index: tasks.len(),
                label: run.label(),
                model_dir: model_dir.clone(),
                backend: run.entry.name.to_string(),
                worker: absolute(&worker)?,
                request: absolute(&request)?,
                request_sha256,
                record: absolute(&run.layout.record(&id))?,
                weights: absolute(&run.layout.weights(&id))?,
            });
        }
        native = native.or(ready.native);
    }
    write_tasks(&dir, &tasks)?;
    let script = job_script(args, threads, native.as_ref(), &absolute(&dir.logs())?);
    std::fs::write(dir.script(), script)
        .map_err(|source| Error::io("writing", dir.script(), source))?;
    let mut matrix = Matrix {
        matrix_version: MATRIX_VERSION,
        flags: flags_of(args, threads),
        tasks,
        submissions: Vec::new(),
    };
    matrix.save(&args.out)?;
    let indices: Vec<usize> = matrix.tasks.iter().map(|task| task.index).collect();
    sbatch(&args.out, &mut matrix, indices, slurm_args)?;
    Ok((matrix, lock))
}

/// `path` made absolute against the current directory, as a task on another node needs it.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|source| Error::io("making absolute", path, source))
}

/// Writes `tasks.tsv`, one tab-separated line per task; the job script reads line
/// `SLURM_ARRAY_TASK_ID + 1`.
fn write_tasks(dir: &SlurmDir, tasks: &[Task]) -> Result<()> {
    let mut text = String::new();
    for task in tasks {
        let entry = parallax_registry::find(&task.backend)?;
        let fields = [
            task.backend.clone(),
            if entry.openmp { "openmp" } else { "-" }.to_string(),
            task.worker.display().to_string(),
            task.request.display().to_string(),
            task.request_sha256.clone(),
            task.record.display().to_string(),
            task.weights.display().to_string(),
        ];
        if let Some(field) = fields.iter().find(|f| f.contains(['\t', '\n'])) {
            return Err(Error::Slurm(format!(
                "a path with a tab or a line break cannot go into the Slurm task table: {field:?}; use another --out"
            )));
        }
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    std::fs::write(dir.tasks(), text).map_err(|source| Error::io("writing", dir.tasks(), source))
}

/// The job script: Slurm's directives, the worker's environment as `compare` sets it here,
/// and the task's line of `tasks.tsv` handed to the worker.
fn job_script(
    args: &Args,
    threads: usize,
    native: Option<&parallax_provision::NativeEnv>,
    logs: &Path,
) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
    let mut script = String::from(
        "#!/bin/bash\n# One run of a parallax comparison per array task; written by `cargo xtask compare --slurm`.\n",
    );
    script.push_str(&format!(
        "#SBATCH --job-name=parallax\n#SBATCH --output={}/%A-%a.log\n#SBATCH --ntasks=1\n#SBATCH --cpus-per-task={threads}\n",
        logs.display()
    ));
    if args.shared {
        script
            .push_str("# --shared: tasks may share a node; their timings get no speed verdicts.\n");
    } else {
        script.push_str("# Each task has its node to itself, so that timings are not disturbed.\n#SBATCH --exclusive\n");
    }
    if matches!(args.device, Device::Cuda(_)) {
        script.push_str("#SBATCH --gres=gpu:1\n");
    }
    script.push_str("set -euo pipefail\n\n# The worker's environment, as `cargo xtask compare` gives it locally.\n");
    if let Some(native) = native {
        script.push_str(&parallax_provision::render(
            &native.vars(),
            parallax_provision::Format::Sh,
        ));
    }
    script.push_str(&format!(
        "export PARALLAX_CACHE={}\nexport TF_CPP_MIN_LOG_LEVEL=2\n",
        quote(&parallax_provision::cache_dir().display().to_string())
    ));
    let tasks = logs.parent().unwrap_or(logs).join("tasks.tsv");
    script.push_str(&format!(
        "\nIFS=$'\\t' read -r backend openmp worker request sha256 record weights \\\n  < <(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {})\n",
        quote(&tasks.display().to_string())
    ));
    let malloc: Vec<String> = crate::workers::MALLOC_KEEPS_FREED_MEMORY
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let unset: String = crate::workers::MALLOC_KEEPS_FREED_MEMORY
        .iter()
        .map(|(name, _)| format!("${{{name}:-}}"))
        .collect();
    script.push_str(&format!(
        "# malloc keeps freed memory for the next step (see workers.rs).\nif [ -z \"{unset}\" ]; then\n  export {}\nfi\n",
        malloc.join(" ")
    ));
    script.push_str(&format!(
        "# libtorch's OpenMP threads spin briefly instead of 3 ms before they sleep (see workers.rs).\nif [ \"$openmp\" = openmp ] && [ -z \"${{OMP_WAIT_POLICY:-}}${{GOMP_SPINCOUNT:-}}\" ]; then\n  export GOMP_SPINCOUNT={}\nfi\n",
        crate::workers::LIBTORCH_SPIN_COUNT
    ));
    let mut cases = String::new();
    for entry in parallax_registry::BACKENDS {
        for (name, flag) in entry.worker_env {
            cases.push_str(&format!(
                "  {}) export {name}=\"${{{name}:+${name} }}{flag}\" ;;\n",
                entry.name
            ));
        }
    }
    if !cases.is_empty() {
        script.push_str(&format!(
            "# Variables an engine reads once, when it loads (the registry's worker_env).\ncase \"$backend\" in\n{cases}esac\n"
        ));
    }
    script.push_str("node=\"${SLURMD_NODENAME:-$(hostname)}\"\necho \"parallax: task $SLURM_ARRAY_TASK_ID: $backend, $request, on $node\"\n");
    script.push_str(&format!(
        "exec \"$worker\" --request \"$request\" --request-sha256 \"$sha256\" \\\n  --record \"$record\" --weights \"$weights\" --node \"$node\"{}\n",
        if args.shared { " --node-shared" } else { "" }
    ));
    script
}

/// `indices` as an `--array` value: ranges of consecutive indices joined by commas.
fn array_spec(indices: &[usize]) -> String {
    let mut sorted: Vec<usize> = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Submits `indices` of the matrix as one array and files the submission in `matrix.json`.
fn sbatch(
    out: &Path,
    matrix: &mut Matrix,
    indices: Vec<usize>,
    slurm_args: &[String],
) -> Result<()> {
    let dir = SlurmDir::new(out);
    let mut command = client("sbatch")?;
    command
        .arg("--parsable")
        .arg(format!("--array={}", array_spec(&indices)))
        .args(slurm_args)
        .arg(absolute(&dir.script())?);
    let printed = output_of(command).map_err(|error| {
        Error::Slurm(format!(
            "sbatch refused the job: {}{}; nothing ran, and the requests and the job script are in {} (fix the arguments, then `cargo xtask compare --slurm --resume {}` submits it)",
            parallax_core::error::one_line(&error),
            if slurm_args.is_empty() {
                String::new()
            } else {
                format!(" (--slurm-args {})", shlex::try_join(slurm_args.iter().map(String::as_str)).unwrap_or_default())
            },
            dir.root.display(),
            out.display(),
        ))
    })?;
    // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
    let job_id = printed
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| Error::Slurm(format!("sbatch printed no job id: {printed:?}")))?
        .to_string();
    eprintln!(
        "submitted {} run(s) as Slurm job {job_id} (array {}); script {}",
        indices.len(),
        array_spec(&indices),
        dir.script().display()
    );
    matrix.submissions.push(Submission { job_id, indices });
    matrix.save(out)
}

/// `--resume DIR`: the runs of the matrix that are neither complete nor queued are submitted
/// again (with their requests, workers and script as they were written).
fn resume(dir: &Path, args: &Args, slurm_args: &[String]) -> Result<(Matrix, OutputLock)> {
    let mut matrix = Matrix::load(dir)?;
    let lock = OutputLock::acquire(dir)?;
    let queued = queued_tasks(&matrix)?;
    let rerun: Vec<usize> = matrix
        .tasks
        .iter()
        .filter(|task| !queued.contains_key(&task.index) && !is_complete(&task.record))
        .map(|task| task.index)
        .collect();
    eprintln!(
        "{}: {} of {} runs complete, {} queued or running, {} to resubmit",
        dir.display(),
        matrix
            .tasks
            .iter()
            .filter(|task| is_complete(&task.record))
            .count(),
        matrix.tasks.len(),
        queued.len(),
        rerun.len()
    );
    if !rerun.is_empty() {
        for task in &matrix.tasks {
            if rerun.contains(&task.index) && !task.worker.is_file() {
                return Err(Error::Slurm(format!(
                    "the worker {} of {} is gone; start the matrix afresh with `cargo xtask compare --slurm`",
                    task.worker.display(),
                    task.label
                )));
            }
        }
        let slurm_args = if args.slurm_args.is_some() {
            slurm_args.to_vec()
        } else {
            let saved = saved_args(&matrix, dir)?;
            match &saved.slurm_args {
                Some(text) => shlex::split(text).unwrap_or_default(),
                None => Vec::new(),
            }
        };
        sbatch(dir, &mut matrix, rerun, &slurm_args)?;
    }
    Ok((matrix, lock))
}

/// Whether the record at `path` is there and complete.
fn is_complete(path: &Path) -> bool {
    RunRecord::load(path).is_ok_and(|record| record.status == RunStatus::Complete)
}

/// The matrix's tasks that Slurm still has queued or running, with their state, by index.
fn queued_tasks(matrix: &Matrix) -> Result<BTreeMap<usize, String>> {
    let jobs: BTreeSet<&str> = matrix
        .submissions
        .iter()
        .map(|submission| submission.job_id.as_str())
        .collect();
    if jobs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut command = client("squeue")?;
    command
        .args(["-h", "-r", "-o", "%F|%K|%T", "-j"])
        .arg(jobs.iter().copied().collect::<Vec<_>>().join(","));
    let listed = match output_of(command) {
        Ok(listed) => listed,
        // Jobs that ended longer ago than the controller remembers are not queued.
        Err(error) if error.to_string().contains("Invalid job id") => String::new(),
        Err(error) => {
            return Err(Error::Slurm(format!(
                "squeue failed: {}",
                parallax_core::error::one_line(&error)
            )));
        }
    };
    Ok(parse_queue(&listed, matrix))
}

/// `squeue -h -r -o %F|%K|%T` lines (array job id, array index, state), as the tasks of `matrix` that they list: a task counts
/// only under its latest submission's job.
fn parse_queue(listed: &str, matrix: &Matrix) -> BTreeMap<usize, String> {
    listed
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split('|');
            let (job, index, state) = (fields.next()?, fields.next()?, fields.next()?);
            let index: usize = index.parse().ok()?;
            (matrix.job_of(index) == Some(job)).then(|| (index, state.to_string()))
        })
        .collect()
}

/// Follows the matrix until no task is queued or running: a line whenever the counts change,
/// and one per run as it ends.
fn follow(out: &Path, matrix: &Matrix) -> Result<()> {
    crate::interrupt::install();
    let jobs: Vec<&str> = matrix
        .submissions
        .iter()
        .map(|s| s.job_id.as_str())
        .collect();
    eprintln!(
        "following Slurm job(s) {} ({} runs); Ctrl-C stops following, not the job",
        jobs.join(", "),
        matrix.tasks.len()
    );
    let mut last_line = String::new();
    let mut announced: BTreeSet<usize> = matrix
        .tasks
        .iter()
        .filter(|task| is_complete(&task.record))
        .map(|task| task.index)
        .collect();
    let mut failing_since: Option<Instant> = None;
    loop {
        if crate::interrupt::interrupted() {
            return Err(Error::Slurm(format!(
                "stopped following; the job goes on: follow and merge it later with `cargo xtask compare --slurm --resume {}`",
                out.display()
            )));
        }
        let queued = match queued_tasks(matrix) {
            Ok(queued) => {
                failing_since = None;
                queued
            }
            Err(error) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > LOST_CONTACT {
                    return Err(Error::Slurm(format!(
                        "lost contact with Slurm for {} s; the job goes on: follow and merge it later with `cargo xtask compare --slurm --resume {}`: {}",
                        LOST_CONTACT.as_secs(),
                        out.display(),
                        parallax_core::error::one_line(&error)
                    )));
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        let running = queued
            .values()
            .filter(|state| state.as_str() == "RUNNING")
            .count();
        let mut complete = 0;
        for task in &matrix.tasks {
            match RunRecord::load(&task.record) {
                Ok(record) if record.status == RunStatus::Complete => {
                    complete += 1;
                    if announced.insert(task.index) {
                        eprintln!(
                            "{}: complete, test accuracy {:.4}{}",
                            task.label,
                            record.test_accuracy,
                            record
                                .node
                                .as_ref()
                                .map(|node| format!(", on {}", node.name))
                                .unwrap_or_default()
                        );
                    }
                }
                _ if !queued.contains_key(&task.index) && announced.insert(task.index) => {
                    eprintln!("{}: ended without a complete record", task.label);
                }
                _ => {}
            }
        }
        let line = format!(
            "slurm: {complete} of {} runs complete, {running} running, {} waiting",
            matrix.tasks.len(),
            queued.len() - running
        );
        if line != last_line {
            eprintln!("{line}");
            last_line = line;
        }
        if queued.is_empty() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// How an array task ended, as Slurm tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Ended {
    state: String,
    exit_code: String,
    node: String,
}

/// The ended tasks of `job_id` by array index, from `scontrol show job -o` (which keeps ended
/// jobs for `MinJobAge` seconds, and needs no accounting database); empty when Slurm no
/// longer knows the job.
fn ended_tasks(job_id: &str) -> BTreeMap<usize, Ended> {
    let Ok(mut command) = client("scontrol") else {
        return BTreeMap::new();
    };
    command.args(["show", "job", "-o", job_id]);
    output_of(command)
        .map(|text| parse_scontrol(&text))
        .unwrap_or_default()
}

/// `scontrol show job -o` lines (one per array task, `Key=Value` fields) by array index.
fn parse_scontrol(text: &str) -> BTreeMap<usize, Ended> {
    text.lines()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_string)
            };
            let index = field("ArrayTaskId")?.parse().ok()?;
            Some((
                index,
                Ended {
                    state: field("JobState").unwrap_or_default(),
                    exit_code: field("ExitCode").unwrap_or_default(),
                    node: field("NodeList").unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// The line of a task's log that says why it ended: the worker's last `error:` line, or
/// slurmstepd's `*** … CANCELLED …` line.
fn reason_in_log(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        if let Some(error) = line.strip_prefix("error: ") {
            return Some(error.trim().to_string());
        }
        // slurmstepd's own prefix (`slurmstepd-<node>: error: `) says nothing more.
        line.find("***").map(|at| line[at..].trim().to_string())
    })
}

/// Why `task` has no complete record, in one line: its state, exit code and node, and the
/// error line of its log (or of its record).
fn failure_line(
    dir: &SlurmDir,
    matrix: &Matrix,
    task: &Task,
    ended: &Ended,
    record: Option<&RunRecord>,
) -> String {
    let job = matrix.job_of(task.index).unwrap_or("?");
    let log = dir.log(job, task.index);
    let reason = std::fs::read_to_string(&log)
        .ok()
        .and_then(|text| reason_in_log(&text))
        .or_else(|| record.and_then(|record| record.error.clone()))
        .unwrap_or_else(|| format!("no error line in {}", log.display()));
    let state = if ended.state.is_empty() {
        "ENDED (Slurm no longer knows its state)".to_string()
    } else {
        ended.state.clone()
    };
    let mut line = format!("Slurm task {job}_{} {state}", task.index);
    if !ended.exit_code.is_empty() {
        line.push_str(&format!(", exit code {}", ended.exit_code));
    }
    if !ended.node.is_empty() && ended.node != "(null)" {
        line.push_str(&format!(", on {}", ended.node));
    }
    line.push_str(&format!(": {reason}"));
    if let Some(record) = record.filter(|record| !record.epochs.is_empty()) {
        line.push_str(&format!(
            " (its record keeps {} finished epoch(s))",
            record.epochs.len()
        ));
    }
    line
}

/// Merges the matrix's records into each model's summary and reports, with a failure for
/// every run whose record is not complete; fails, after writing everything, when a run failed.
fn merge(out: &Path, matrix: &Matrix, started: Instant) -> Result<()> {
    let args = saved_args(matrix, out)?;
    let dir = SlurmDir::new(out);
    let mut ended: BTreeMap<&str, BTreeMap<usize, Ended>> = BTreeMap::new();
    for submission in &matrix.submissions {
        ended.insert(&submission.job_id, ended_tasks(&submission.job_id));
    }
    let mut failed_models = Vec::new();
    for (one, checked) in comparisons(&args)? {
        let runs: Vec<PlannedRun> = planned(&one, &checked);
        let mut summary = Summary::default();
        let mut planned_here = Vec::new();
        for run in &runs {
            let record_path = run.layout.record(&run.request.id());
            let Some(task) = matrix
                .tasks
                .iter()
                .find(|task| absolute(&record_path).is_ok_and(|path| path == task.record))
            else {
                // A backend left out when the matrix was made (its library could not be
                // provisioned): it has no task.
                continue;
            };
            planned_here.push(run.clone());
            let record = RunRecord::load(&task.record).ok();
            let error = match &record {
                Some(record) if record.status == RunStatus::Complete => None,
                _ => {
                    let job = matrix.job_of(task.index).unwrap_or_default();
                    let state = ended
                        .get(job)
                        .and_then(|tasks| tasks.get(&task.index))
                        .cloned()
                        .unwrap_or_default();
                    let line = failure_line(&dir, matrix, task, &state, record.as_ref());
                    eprintln!("{}: failed: {line}", task.label);
                    Some(line)
                }
            };
            file_outcome(&mut summary, run, record, error);
        }
        if planned_here.is_empty() {
            continue;
        }
        if let Err(error) = conclude(
            &one,
            &checked,
            &planned_here,
            summary,
            started,
            planned_here.len(),
        ) {
            failed_models.push((one.model().key(), error));
        }
    }
    let resubmit = format!(
        "the others' records are kept, and `cargo xtask compare --slurm --resume {}` resubmits the failed ones",
        out.display()
    );
    match failed_models.as_slice() {
        [] => Ok(()),
        [(_, error)] => {
            return Err(Error::Slurm(format!(
                "{}; {resubmit}",
                parallax_core::error::one_line(error)
            )));
        }
        several => {
            for (model, error) in several {
                eprintln!("{model}: {}", parallax_core::error::one_line(error));
            }
            return Err(Error::Slurm(format!(
                "runs of {} models of the Slurm matrix failed ({}); {resubmit}",
                several.len(),
                several
                    .iter()
                    .map(|(model, _)| model.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
}

/// Checks of the Slurm path without a cluster: the array specification, the parsers of
/// squeue's and scontrol's output, the job script, and the lookup of sbatch.
#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(submissions: &[(&str, &[usize])]) -> Matrix {
        Matrix {
            matrix_version: MATRIX_VERSION,
            flags: Vec::new(),
            tasks: Vec::new(),
            submissions: submissions
                .iter()
                .map(|(job, indices)| Submission {
                    job_id: job.to_string(),
                    indices: indices.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_job_script_asks_for_the_runs_threads_a_node_of_its_own_and_a_gpu_for_cuda() {
        let logs = Path::new("/shared/out/slurm/logs");
        let mut flags = super::super::tests::args(&["tch"]);
        let native = parallax_provision::NativeEnv {
            lib_dirs: vec![PathBuf::from("/cache/native/libtorch/lib")],
            ..Default::default()
        };
        let script = job_script(&flags, 4, Some(&native), logs);
        for line in [
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --exclusive",
            "#SBATCH --output=/shared/out/slurm/logs/%A-%a.log",
            "export LD_LIBRARY_PATH='/cache/native/libtorch/lib'\"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\"",
            "  export GOMP_SPINCOUNT=10000",
            "  export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184",
            "  tf) export TF_XLA_FLAGS=\"${TF_XLA_FLAGS:+$TF_XLA_FLAGS }--tf_xla_cpu_global_jit\" ;;",
            "export TF_CPP_MIN_LOG_LEVEL=2",
        ] {
            assert!(
                script.lines().any(|l| l == line),
                "no line {line:?} in:\n{script}"
            );
        }
        assert!(script.contains("'/shared/out/slurm/tasks.tsv'"), "{script}");
        assert!(!script.contains("--gres") && !script.contains("--node-shared"));
        flags.device = Device::Cuda(0);
        flags.shared = true;
        let script = job_script(&flags, 4, None, logs);
        assert!(
            script.lines().any(|l| l == "#SBATCH --gres=gpu:1"),
            "{script}"
        );
        assert!(!script.contains("#SBATCH --exclusive"), "{script}");
        assert!(
            script.contains("--node \"$node\" --node-shared"),
            "{script}"
        );
    }

    #[test]
    fn array_indices_become_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[7, 0, 2, 3, 4, 9]), "0,2-4,7,9");
        assert_eq!(array_spec(&[5]), "5");
    }

    #[test]
    fn a_resubmitted_task_counts_under_its_latest_job_only() {
        let matrix = matrix(&[("12", &[0, 1, 2]), ("15", &[1])]);
        let queue = parse_queue(
            "12|0|RUNNING\n12|1|PENDING\n15|1|PENDING\n12|2|COMPLETING\n",
            &matrix,
        );
        assert_eq!(
            queue,
            BTreeMap::from([
                (0, "RUNNING".to_string()),
                (1, "PENDING".to_string()),
                (2, "COMPLETING".to_string())
            ])
        );
        assert_eq!(matrix.job_of(1), Some("15"));
        assert_eq!(matrix.job_of(3), None);
    }

    #[test]
    fn scontrol_lines_give_each_tasks_state_exit_code_and_node() {
        let text = "JobId=13 ArrayJobId=12 ArrayTaskId=1 JobName=parallax JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 NodeList=localhost\nJobId=14 ArrayJobId=12 ArrayTaskId=2 JobState=CANCELLED ExitCode=0:15 NodeList=localhost\n";
        let ended = parse_scontrol(text);
        assert_eq!(
            ended[&1],
            Ended {
                state: "FAILED".into(),
                exit_code: "3:0".into(),
                node: "localhost".into()
            }
        );
        assert_eq!(ended[&2].state, "CANCELLED");
    }

    #[test]
    fn the_log_gives_the_workers_error_or_slurms_cancellation() {
        let worker = "parallax: task 1: tch\n{\"event\":\"step\"}\nerror: deliberately failed\n";
        assert_eq!(
            reason_in_log(worker).as_deref(),
            Some("deliberately failed")
        );
        let cancelled = "parallax: task 2\nslurmstepd-localhost: error: *** JOB 14 ON localhost CANCELLED AT 2026-12-06T20:01:02 ***\n";
        assert_eq!(
            reason_in_log(cancelled).as_deref(),
            Some("*** JOB 14 ON localhost CANCELLED AT 2026-12-06T20:01:02 ***")
        );
        assert_eq!(reason_in_log("nothing\n"), None);
    }

    #[test]
    fn without_sbatch_on_path_the_error_says_where_to_run() {
        let empty = tempfile::tempdir().unwrap();
        let error = client_in("sbatch", Some(empty.path().as_os_str()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "--slurm needs Slurm's `sbatch` on PATH, and there is none here: run on the cluster's login node, or leave out --slurm to run here"
        );
        assert!(find_program("sh", Some(std::ffi::OsStr::new("/bin:/usr/bin"))).is_some());
    }

    #[test]
    fn resume_on_a_directory_without_a_matrix_says_what_it_takes() {
        let empty = tempfile::tempdir().unwrap();
        let error = Matrix::load(empty.path()).unwrap_err().to_string();
        assert!(error.contains("holds no Slurm matrix"), "{error}");
        assert!(error.contains("--resume takes the --out DIR"), "{error}");
    }
}
