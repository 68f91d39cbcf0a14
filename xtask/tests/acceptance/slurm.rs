//! The Slurm acceptance: a real single-node Slurm cluster (munged, slurmctld, slurmd) started
//! under a temporary directory with its own ports, and `cargo xtask compare --slurm` through it
//! as a user runs it.
//!
//! It checks that a 3-engine × 4-seed matrix's records equal a local `compare`'s (accuracy,
//! confusion matrix, each epoch's training loss); that a task that fails is reported with its
//! state, exit code and error line while every other record is written, and that `--resume`
//! reruns just that one; that a task cancelled mid-run is reported and keeps its finished
//! epochs; and that sbatch refusing the job, no sbatch on PATH and `--resume` on a directory
//! without a matrix each give one line and change nothing. The cluster's daemons are stopped
//! by their pids when the phase ends, failed or not ([`Cluster`]'s `Drop`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use parallax_core::record::{RunRecord, RunStatus};

/// How long the cluster may take to come up: about 1 s here.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A single-node Slurm cluster under a temporary directory: its daemons are this process's
/// children, and dropping it stops exactly them.
pub struct Cluster {
    /// Under the system's temporary directory: munge's socket path must stay short.
    dir: PathBuf,
    conf: PathBuf,
    /// munged, slurmctld and slurmd, in the order they started.
    daemons: Vec<(&'static str, Child)>,
    /// Where the daemons' logs are copied when the cluster stops, for a failure's diagnosis.
    keep_logs: PathBuf,
}

/// A TCP port that is free now on this machine.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `program`, under `timeout` (a client of a dead controller retries for seconds).
fn timed(seconds: u32, program: &str) -> Command {
    let mut command = Command::new("timeout");
    command.arg(seconds.to_string()).arg(program);
    command
}

impl Cluster {
    /// Starts munged, slurmctld and slurmd, and waits until the node is idle; their logs are
    /// copied to `keep_logs` when it stops.
    pub fn start(keep_logs: &Path) -> anyhow::Result<Self> {
        let root = std::env::temp_dir().join(format!("parallax-slurm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let dir = root.clone();
        // munged refuses a socket directory that others cannot reach, and a key that they can.
        let set_mode = |path: &Path, mode: u32| -> anyhow::Result<()> {
            let mut permissions = std::fs::metadata(path)?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, mode);
            Ok(std::fs::set_permissions(path, permissions)?)
        };
        let munge = root.join("munge");
        let key_dir = root.join("munge-key");
        for sub in [&munge, &key_dir, &root.join("state"), &root.join("spool")] {
            std::fs::create_dir_all(sub)?;
        }
        set_mode(&root, 0o755)?;
        set_mode(&munge, 0o755)?;
        set_mode(&key_dir, 0o700)?;
        let key = key_dir.join("munge.key");
        let made = timed(30, "mungekey")
            .arg("--create")
            .arg(format!("--keyfile={}", key.display()))
            .status()
            .context("running mungekey")?;
        ensure!(made.success(), "mungekey could not create a key");
        let socket = munge.join("munge.socket.2");
        let conf = root.join("slurm.conf");
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        std::fs::write(root.join("plugstack.conf"), "")?;
        std::fs::write(
            &conf,
            config(&root, &socket, free_port()?, free_port()?, cpus),
        )?;
        let mut cluster = Cluster {
            dir,
            conf: conf.clone(),
            daemons: Vec::new(),
            keep_logs: keep_logs.to_path_buf(),
        };
        let log = |name: &str| -> anyhow::Result<std::fs::File> {
            Ok(std::fs::File::create(root.join(format!("{name}.out")))?)
        };
        let mut munged = Command::new("munged");
        munged
            .arg("-F")
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
            .arg(format!("--log-file={}", munge.join("munged.log").display()))
            .arg(format!(
                "--seed-file={}",
                munge.join("munged.seed").display()
            ));
        let mut slurmctld = Command::new("slurmctld");
        slurmctld.args(["-D", "-i", "-f"]).arg(&conf);
        let mut slurmd = Command::new("slurmd");
        slurmd.args(["-D", "-N", "localhost", "-f"]).arg(&conf);
        for (name, mut command) in [
            ("munged", munged),
            ("slurmctld", slurmctld),
            ("slurmd", slurmd),
        ] {
            let child = command
                .stdin(Stdio::null())
                .stdout(log(name)?)
                .stderr(log(name)?)
                .spawn()
                .with_context(|| format!("starting {name}"))?;
            cluster.daemons.push((name, child));
            if name == "munged" {
                cluster.wait_for("munged's socket", |_| Ok(socket.exists()))?;
            }
        }
        cluster.wait_for("the node to be idle", |cluster: &Cluster| {
            let output = cluster
                .client(5, "sinfo")
                .args(["-h", "-o", "%T"])
                .output()?;
            Ok(String::from_utf8_lossy(&output.stdout).trim() == "idle")
        })?;
        eprintln!(
            "slurm acceptance: a single-node cluster is up in {} (pids: {})",
            cluster.dir.display(),
            cluster
                .daemons
                .iter()
                .map(|(name, child)| format!("{name} {}", child.id()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(cluster)
    }

    /// Waits until `ready` holds, failing when a daemon has died or at the deadline.
    fn wait_for<F>(&mut self, what: &str, ready: F) -> anyhow::Result<()>
    where
        F: Fn(&Cluster) -> anyhow::Result<bool>,
    {
        let start = Instant::now();
        loop {
            for (name, child) in &mut self.daemons {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{name} exited ({status}) while waiting for {what}; its output is in {}",
                        self.dir.join(format!("{name}.out")).display()
                    );
                }
            }
            if ready(self)? {
                return Ok(());
            }
            if start.elapsed() > START_DEADLINE {
                bail!(
                    "waited {} s for {what}; the daemons' logs are in {}",
                    START_DEADLINE.as_secs(),
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A Slurm client of this cluster, under a time limit.
    pub fn client(&self, seconds: u32, program: &str) -> Command {
        let mut command = timed(seconds, program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// The cluster's configuration file, for `SLURM_CONF`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// Cancels the jobs, waits for the queue to empty, then stops slurmd, slurmctld and
    /// munged by their pids: SIGTERM, then SIGKILL after 5 s.
    fn stop(&mut self) {
        let _ = self.client(10, "scancel").args(["--user", "root"]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let listed = self.client(5, "squeue").args(["-h", "-o", "%i"]).output();
            if listed.is_ok_and(|out| out.status.success() && out.stdout.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for (name, child) in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("slurm acceptance: {name} ignored SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.daemons.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::create_dir_all(&self.keep_logs);
        for name in [
            "slurmctld.log",
            "slurmd.log",
            "munged.out",
            "slurmctld.out",
            "slurmd.out",
            "munge/munged.log",
            "slurm.conf",
        ] {
            let from = self.dir.join(name);
            if let Some(file) = from.file_name() {
                let _ = std::fs::copy(&from, self.keep_logs.join(file));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster's `slurm.conf`: everything under `root`, settings that work without systemd
/// and cgroups (`../shared/docs/slurm-notes.md`), and one node, `localhost`, with `cpus`.
fn config(root: &Path, socket: &Path, controller_port: u16, node_port: u16, cpus: usize) -> String {
    let at = |name: &str| root.join(name).display().to_string();
    format!(
        "ClusterName=parallax-test\n\
         SlurmctldHost=localhost(127.0.0.1)\n\
         SlurmctldPort={controller_port}\n\
         SlurmdPort={node_port}\n\
         AuthType=auth/munge\n\
         CredType=cred/munge\n\
         AuthInfo=socket={}\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core\n\
         MpiDefault=none\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         ReturnToService=2\n\
         MailProg=/bin/true\n\
         PlugStackConfig={}\n\
         StateSaveLocation={}\n\
         SlurmdSpoolDir={}\n\
         SlurmctldPidFile={}\n\
         SlurmdPidFile={}\n\
         SlurmctldLogFile={}\n\
         SlurmdLogFile={}\n\
         SchedulerParameters=batch_sched_delay=0\n\
         JobCompType=jobcomp/filetxt\n\
         JobCompLoc={}\n\
         MinJobAge=600\n\
         NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
         PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
        socket.display(),
        at("plugstack.conf"),
        at("state"),
        at("spool"),
        at("slurmctld.pid"),
        at("slurmd.pid"),
        at("slurmctld.log"),
        at("slurmd.log"),
        at("jobcomp.txt"),
    )
}

/// `cargo xtask <args>` with this binary and `env`, its stderr shown and returned.
fn xtask_with(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<(bool, String)> {
    let exe = crate::support::xtask_binary();
    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .output()
        .with_context(|| format!("running cargo xtask {}", args.join(" ")))?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprint!("{}{stderr}", String::from_utf8_lossy(&output.stdout));
    Ok((output.status.success(), stderr))
}

/// A worker that fails tch's run of seed 2 the first time only (a node's hiccup), and hands
/// every run to the real worker otherwise.
fn failing_once_worker(dir: &Path, worker: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("worker-failing-tch-seed-2-once.sh");
    let marker = dir.join("tch-seed-2-failed-once");
    let _ = std::fs::remove_file(&marker);
    crate::support::write_script(
        &path,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  */tch/seed-2.json*) if [ ! -e '{marker}' ]; then touch '{marker}'; echo 'error: deliberately failed once by the slurm acceptance' >&2; exit 3; fi;;\nesac\nexec '{worker}' \"$@\"\n",
            marker = marker.display(),
            worker = worker.display()
        ),
    )
}

/// The records under `dir/records`, by (backend, seed).
fn records(dir: &Path) -> anyhow::Result<std::collections::BTreeMap<(String, u64), RunRecord>> {
    let mut found = std::collections::BTreeMap::new();
    for path in parallax::report::dir::json_files(&dir.join("records"))? {
        let record = RunRecord::load(&path)?;
        found.insert((record.backend.clone(), record.seed), record);
    }
    Ok(found)
}

/// The summary's accuracy line, as the note quotes it: each backend's mean test accuracy.
fn accuracy_line(dir: &Path) -> anyhow::Result<String> {
    let summary = crate::support::summary(dir)?;
    let mut by_backend: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for record in summary["records"]
        .as_array()
        .context("summary without records")?
    {
        by_backend
            .entry(record["backend"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(record["test_accuracy"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(by_backend
        .iter()
        .map(|(backend, values)| {
            let shown: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
            format!("{backend} [{}]", shown.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; "))
}

/// Runs the Slurm acceptance with the test build's worker.
pub fn acceptance(worker: &Path) -> anyhow::Result<()> {
    let out = crate::support::acceptance_dir();
    let local = out.join("slurm-local");
    let cluster_out = out.join("slurm");
    for dir in [
        &local,
        &cluster_out,
        &out.join("slurm-cancel"),
        &out.join("slurm-refused"),
        &out.join("slurm-no-wait"),
    ] {
        let _ = std::fs::remove_dir_all(dir);
    }
    let worker_text = worker.to_string_lossy().into_owned();
    let matrix = [
        "--backends",
        "burn,tch,tf",
        "--model",
        "mlp",
        "--dataset",
        "fashion-mnist-subset",
        "--seeds",
        "4",
        "--epochs",
        "1",
        "--threads",
        "2",
    ];
    let path_of = |dir: &Path| dir.to_string_lossy().into_owned();

    // The reference: the same matrix, here.
    let local_text = path_of(&local);
    let mut args = vec!["compare", "--out", &local_text, "--worker", &worker_text];
    args.extend(matrix);
    crate::support::xtask(&args)?;

    let cluster = Cluster::start(&out.join("slurm-daemons"))?;
    let conf = cluster.conf().as_os_str().to_owned();
    let env = [("SLURM_CONF", conf.as_os_str())];

    // Through Slurm, tch's seed 2 failing once: reported with its state, exit code and error
    // line, every other record written.
    let failing = failing_once_worker(&out.join("slurm-worker"), worker)?;
    let failing_text = path_of(&failing);
    let cluster_text = path_of(&cluster_out);
    let mut args = vec![
        "compare",
        "--slurm",
        "--out",
        &cluster_text,
        "--worker",
        &failing_text,
    ];
    args.extend(matrix);
    eprintln!("slurm acceptance: tch's seed 2 fails once on purpose; its error lines are expected");
    let (succeeded, stderr) = xtask_with(&args, &env)?;
    ensure!(!succeeded, "a Slurm matrix with a failed task exited 0");
    let summary = crate::support::summary(&cluster_out)?;
    let failures = summary["failures"].as_array().context("no failures list")?;
    ensure!(
        failures.len() == 1,
        "expected exactly one failure, got {failures:?}"
    );
    let failure = failures[0]["error"].as_str().unwrap_or_default();
    for expected in ["FAILED", "exit code 3", "deliberately failed once"] {
        ensure!(
            failure.contains(expected) && stderr.contains(expected),
            "the failed task's line lacks {expected:?}: {failure}"
        );
    }
    let written = records(&cluster_out)?;
    ensure!(
        written.len() == 11 && written.values().all(|r| r.status == RunStatus::Complete),
        "expected the 11 other records complete, found {}",
        written.len()
    );

    // --resume reruns only that task, and the records equal the local run's.
    let (succeeded, stderr) = xtask_with(&["compare", "--slurm", "--resume", &cluster_text], &env)?;
    ensure!(succeeded, "--resume of the matrix failed");
    ensure!(
        stderr.contains("11 of 12 runs complete, 0 queued or running, 1 to resubmit"),
        "--resume did not resubmit exactly the failed run"
    );
    let (here, there) = (records(&local)?, records(&cluster_out)?);
    ensure!(
        here.len() == 12 && there.len() == 12,
        "expected 12 records on each side"
    );
    for (key, a) in &here {
        let b = &there[key];
        let losses = |r: &RunRecord| r.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>();
        ensure!(
            a.test_accuracy == b.test_accuracy
                && a.confusion_matrix == b.confusion_matrix
                && losses(a) == losses(b),
            "{key:?}: the Slurm record differs from the local one (test accuracy {} vs {})",
            a.test_accuracy,
            b.test_accuracy
        );
        let node = b.node.as_ref().context("a Slurm record names no node")?;
        ensure!(
            node.name == "localhost" && node.exclusive,
            "{key:?}: node {node:?}"
        );
    }
    eprintln!(
        "slurm acceptance: local accuracies: {}",
        accuracy_line(&local)?
    );
    eprintln!(
        "slurm acceptance: Slurm accuracies: {}",
        accuracy_line(&cluster_out)?
    );
    eprintln!(
        "slurm acceptance: all 12 records equal the local run's (test accuracy, confusion matrix, training losses)"
    );

    cancelled_mid_run(&cluster, worker, &out.join("slurm-cancel"))?;
    submitted_without_waiting(&env, worker, &out.join("slurm-no-wait"))?;

    // sbatch refusing the job: one line, nothing run.
    let refused = out.join("slurm-refused");
    let refused_text = path_of(&refused);
    let (succeeded, stderr) = xtask_with(
        &[
            "compare",
            "--slurm",
            "--slurm-args=--partition=no-such-partition",
            "--backends",
            "burn",
            "--dataset",
            "fashion-mnist-subset",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--threads",
            "2",
            "--worker",
            &worker_text,
            "--out",
            &refused_text,
        ],
        &env,
    )?;
    let last = stderr.lines().last().unwrap_or_default().to_string();
    ensure!(
        !succeeded
            && last.contains("sbatch refused the job")
            && last.to_lowercase().contains("invalid partition"),
        "an unknown partition did not give sbatch's refusal in one line: {last}"
    );
    ensure!(
        !refused.join("records").exists() || records(&refused)?.is_empty(),
        "a refused job left records"
    );

    // No sbatch on PATH: one line, before anything is built or written.
    let nowhere = out.join("slurm-no-path");
    std::fs::create_dir_all(&nowhere)?;
    let (succeeded, stderr) = xtask_with(
        &[
            "compare",
            "--slurm",
            "--backends",
            "burn",
            "--out",
            &path_of(&nowhere.join("out")),
        ],
        &[("PATH", nowhere.as_os_str())],
    )?;
    ensure!(
        !succeeded
            && stderr.trim().lines().count() == 1
            && stderr.contains("needs Slurm's `sbatch` on PATH"),
        "without sbatch: {stderr}"
    );
    ensure!(
        !nowhere.join("out").exists(),
        "without sbatch, compare still wrote its directory"
    );

    // --resume on a directory without a matrix: one line, its summary untouched.
    let before = std::fs::read(local.join("summary.json"))?;
    let (succeeded, stderr) = xtask_with(&["compare", "--slurm", "--resume", &local_text], &env)?;
    ensure!(
        !succeeded && stderr.contains("holds no Slurm matrix"),
        "--resume on a local comparison: {stderr}"
    );
    ensure!(
        before == std::fs::read(local.join("summary.json"))?,
        "--resume changed a directory without a matrix"
    );
    drop(cluster);
    Ok(())
}

/// A two-run matrix whose first task is cancelled once it has finished an epoch: the follower
/// reports it CANCELLED, its record keeps the finished epochs, and the second run completes.
fn cancelled_mid_run(cluster: &Cluster, worker: &Path, out: &Path) -> anyhow::Result<()> {
    let exe = crate::support::xtask_binary();
    let log_path = out.with_extension("log");
    let log = std::fs::File::create(&log_path)?;
    let mut follower = Command::new(exe)
        .args([
            "compare",
            "--slurm",
            "--backends",
            "burn",
            "--dataset",
            "fashion-mnist-subset",
        ])
        .args([
            "--seeds",
            "2",
            "--epochs",
            "40",
            "--threads",
            "2",
            "--worker",
        ])
        .arg(worker)
        .arg("--out")
        .arg(out)
        .env("SLURM_CONF", cluster.conf())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let first = out.join("records/mlp/burn/seed-1.json");
    let start = Instant::now();
    let job = loop {
        ensure!(
            start.elapsed() < Duration::from_secs(300),
            "the first task never finished an epoch"
        );
        if let Some(status) = follower.try_wait()? {
            bail!(
                "the follower exited ({status}) before the cancellation; see {}",
                log_path.display()
            );
        }
        if RunRecord::load(&first).is_ok_and(|record| !record.epochs.is_empty()) {
            let text = std::fs::read_to_string(out.join("slurm/matrix.json"))?;
            let matrix: serde_json::Value = serde_json::from_str(&text)?;
            break matrix["submissions"][0]["job_id"]
                .as_str()
                .context("no job id")?
                .to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cancelled = cluster
        .client(10, "scancel")
        .arg(format!("{job}_0"))
        .status()?;
    ensure!(cancelled.success(), "scancel {job}_0 failed");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = follower.try_wait()? {
            break status;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = follower.kill();
            bail!(
                "the follower did not end after the cancellation; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log_path)?;
    eprint!("{text}");
    ensure!(!status.success(), "a matrix with a cancelled task exited 0");
    ensure!(
        text.contains("CANCELLED"),
        "the cancelled task was not reported as CANCELLED"
    );
    let kept = RunRecord::load(&first)?;
    ensure!(
        kept.status == RunStatus::Running && !kept.epochs.is_empty() && kept.epochs.len() < 40,
        "the cancelled run's record should keep its finished epochs: {:?}, {} epochs",
        kept.status,
        kept.epochs.len()
    );
    let second = RunRecord::load(&out.join("records/mlp/burn/seed-2.json"))?;
    ensure!(
        second.status == RunStatus::Complete,
        "the other run did not complete"
    );
    eprintln!(
        "slurm acceptance: task {job}_0 cancelled after {} of 40 epochs, reported, its record kept; the other run complete",
        kept.epochs.len()
    );
    Ok(())
}

/// `--no-wait --shared`: the command returns once the job is submitted, naming the job and
/// the command that follows and merges it; `--resume` then does, and the record says its run
/// shared its node.
fn submitted_without_waiting(
    env: &[(&str, &std::ffi::OsStr)],
    worker: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let out_text = out.to_string_lossy().into_owned();
    let worker_text = worker.to_string_lossy().into_owned();
    let exe = crate::support::xtask_binary();
    let mut command = Command::new(exe);
    command
        .args([
            "compare",
            "--slurm",
            "--no-wait",
            "--shared",
            "--backends",
            "burn",
        ])
        .args([
            "--dataset",
            "fashion-mnist-subset",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--threads",
            "2",
        ])
        .args(["--worker", &worker_text, "--out", &out_text])
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output()?;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    eprint!("{printed}{}", String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success(), "--no-wait failed");
    ensure!(
        printed.contains("submitted Slurm job")
            && printed.contains(&format!("--resume {out_text}")),
        "--no-wait did not name the job and how to follow it: {printed}"
    );
    ensure!(
        !out.join("summary.json").exists(),
        "--no-wait merged before the job ran"
    );
    let (succeeded, stderr) = xtask_with(&["compare", "--slurm", "--resume", &out_text], env)?;
    ensure!(succeeded, "--resume after --no-wait failed");
    ensure!(
        stderr.contains("0 of 1 runs complete, 1 queued or running, 0 to resubmit")
            || stderr.contains("1 of 1 runs complete, 0 queued or running, 0 to resubmit"),
        "--resume resubmitted a run that was queued or complete"
    );
    let record = RunRecord::load(&out.join("records/mlp/burn/seed-1.json"))?;
    let node = record.node.context("a Slurm record names no node")?;
    ensure!(
        !node.exclusive,
        "a --shared run's record says it had its node to itself"
    );
    eprintln!(
        "slurm acceptance: --no-wait returned at submission, --resume followed and merged, and the --shared run's record says so"
    );
    Ok(())
}
