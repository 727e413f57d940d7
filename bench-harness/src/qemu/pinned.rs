//! The pinned runner: one model, one emulated process, counts from the plugin.
//!
//! Everything the guest can see is fixed, because each of these was seen to move counts:
//! the environment (`env_clear` plus a fixed list), argv (`./edge-run` and a relative model
//! path from a fixed working folder, so command lines are byte-identical on every machine),
//! the loader cache and `/proc/cpuinfo` and `/sys` cache entries (private `-L` prefix), and
//! one thread.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;

use super::QemuError;

/// Folder (inside the work folder) the guest runs in; holds `edge-run` and `models/`.
pub const PINNED_DIR: &str = "pinned";
/// The guest's argv[0].
pub const GUEST_BINARY: &str = "./edge-run";

/// Preloaded into the guest (path inside the private prefix, built by ci/qemu-sysroot.sh).
pub const GUEST_GETRANDOM_SHIM: &str = "/opt/edge/libfixed_getrandom.so";

/// The guest's whole environment (besides test switches).
pub const GUEST_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/bin:/bin"),
    ("LC_ALL", "C"),
    ("HOME", "/nonexistent"),
    ("EDGE_ROI", "1"),
    ("RAYON_NUM_THREADS", "1"),
    ("RUST_BACKTRACE", "0"),
];

/// How to run the guest.
#[derive(Debug, Clone)]
pub struct PinnedRunner {
    pub qemu: String,
    pub qemu_cpu: String,
    /// Private sysroot given to `qemu -L`.
    pub prefix: PathBuf,
    pub plugin: PathBuf,
    /// Work folder: `pinned/` and the plugin's result files live here.
    pub work_dir: PathBuf,
    pub engine: String,
    pub warmup: usize,
    pub runs: usize,
    pub cache: bool,
    /// Extra guest variables (test-only switches such as `EDGE_TEST_EXTRA_INPUT_PASS=1`).
    pub extra_env: Vec<(String, String)>,
}

/// What one pinned run measured, per inference.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCounts {
    pub rois_seen: u64,
    pub inferences: u64,
    pub instructions: u64,
    pub memory_accesses: u64,
    pub loads: u64,
    pub stores: u64,
    pub l1d_accesses: Option<u64>,
    pub l1d_misses: Option<u64>,
    pub guest: serde_json::Value,
    pub wall_s: f64,
}

/// Counts of one node of the plan, per inference.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct NodeCounts {
    pub name: String,
    pub op: String,
    pub instructions: u64,
    pub memory_accesses: u64,
}

#[derive(Debug, Deserialize)]
struct GuestNode {
    name: String,
    op: String,
}

#[derive(Debug, Deserialize)]
struct GuestNodes {
    nodes: Vec<GuestNode>,
}

#[derive(Debug, Deserialize)]
struct PluginL1d {
    accesses: u64,
    misses: u64,
}

#[derive(Debug, Deserialize)]
struct PluginCounts {
    instructions: u64,
    memory_accesses: u64,
    loads: u64,
    stores: u64,
    l1d: Option<PluginL1d>,
}

#[derive(Debug, Deserialize)]
struct PluginResult {
    schema: u32,
    roi_open_at_exit: bool,
    unmatched_stops: u64,
    rois: Vec<PluginCounts>,
}

fn copy_if_different(from: &Path, to: &Path) -> Result<(), QemuError> {
    let new = std::fs::read(from).map_err(|e| QemuError::io(from, e))?;
    if std::fs::read(to).ok().as_deref() == Some(&new[..]) {
        return Ok(());
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| QemuError::io(dir, e))?;
    }
    // Write beside and rename, so a half-copied binary never runs.
    let tmp = to.with_extension("partial");
    std::fs::write(&tmp, &new).map_err(|e| QemuError::io(&tmp, e))?;
    std::fs::set_permissions(
        &tmp,
        std::fs::metadata(from)
            .map_err(|e| QemuError::io(from, e))?
            .permissions(),
    )
    .map_err(|e| QemuError::io(&tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| QemuError::io(to, e))
}

impl PinnedRunner {
    pub fn pinned_dir(&self) -> PathBuf {
        self.work_dir.join(PINNED_DIR)
    }

    /// Copies the guest binary to its fixed place.
    pub fn install_binary(&self, edge_run: &Path) -> Result<(), QemuError> {
        copy_if_different(edge_run, &self.pinned_dir().join("edge-run"))
    }

    /// Copies a model to its fixed place and returns the guest's (relative) path for it.
    pub fn install_model(&self, name: &str, file: &Path) -> Result<String, QemuError> {
        let rel = format!("models/{name}.onnx");
        copy_if_different(file, &self.pinned_dir().join(&rel))?;
        Ok(rel)
    }

    pub fn guest_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = GUEST_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(self.extra_env.iter().cloned());
        env
    }

    pub fn guest_args(&self, guest_model: &str) -> Vec<String> {
        let args: Vec<String> = vec![
            GUEST_BINARY.into(),
            "bench".into(),
            "--model".into(),
            guest_model.into(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--runs".into(),
            self.runs.to_string(),
            // No time minima: the number of inferences must not depend on emulation speed.
            "--warmup-time".into(),
            "0".into(),
            "--min-time".into(),
            "0".into(),
            "--engine".into(),
            self.engine.clone(),
            "--threads".into(),
            "1".into(),
            "--json".into(),
        ];
        args
    }

    fn plugin_arg(&self, out: &Path) -> String {
        format!(
            "{},out={},cache={}",
            self.plugin.display(),
            out.display(),
            if self.cache { "on" } else { "off" }
        )
    }

    /// The host command for one model (`out` = where the plugin writes).
    /// qemu and its options, up to the guest command.
    fn qemu_prefix_args(&self, out: &Path) -> Vec<String> {
        vec![
            self.qemu.clone(),
            "-cpu".into(),
            self.qemu_cpu.clone(),
            "-L".into(),
            self.prefix.display().to_string(),
            // Fixed getrandom(2) bytes for the guest only (ci/fixed-getrandom.c): std's
            // HashMap seeds otherwise change tract's allocation history and the counts.
            "-E".into(),
            format!("LD_PRELOAD={GUEST_GETRANDOM_SHIM}"),
            "-plugin".into(),
            self.plugin_arg(out),
        ]
    }

    pub fn command_line(&self, guest_model: &str, out: &Path) -> Vec<String> {
        let mut cmd = self.qemu_prefix_args(out);
        cmd.extend(self.guest_args(guest_model));
        cmd
    }

    /// Guest arguments of the per-operator run (`edge-run nodes`).
    pub fn node_guest_args(&self, guest_model: &str) -> Vec<String> {
        vec![
            GUEST_BINARY.into(),
            "nodes".into(),
            "--model".into(),
            guest_model.into(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--runs".into(),
            self.runs.max(1).to_string(),
            "--engine".into(),
            self.engine.clone(),
            "--threads".into(),
            "1".into(),
        ]
    }

    /// Instructions and memory accesses per node of the plan, per inference: every node
    /// evaluation is its own region of interest (`edge-run nodes`).
    pub fn count_per_node(&self, name: &str, tag: &str) -> Result<Vec<NodeCounts>, QemuError> {
        let guest_model = format!("models/{name}.onnx");
        let (result, stdout, _) = self.run_guest(
            name,
            &format!("{tag}-nodes"),
            self.node_guest_args(&guest_model),
        )?;
        let guest: GuestNodes = serde_json::from_slice(&stdout).map_err(|e| {
            QemuError::Run(format!("{name}: edge-run nodes printed no node list: {e}"))
        })?;
        let runs = self.runs.max(1);
        let per_run = guest.nodes.len();
        if per_run == 0 || result.rois.len() != runs * per_run {
            return Err(QemuError::Run(format!(
                "{name}: {} region(s) of interest for {runs} run(s) of {per_run} node(s)",
                result.rois.len()
            )));
        }
        Ok(guest
            .nodes
            .into_iter()
            .enumerate()
            .map(|(i, node)| {
                let mean = |f: &dyn Fn(&PluginCounts) -> u64| {
                    (0..runs)
                        .map(|r| f(&result.rois[r * per_run + i]))
                        .sum::<u64>()
                        / runs as u64
                };
                NodeCounts {
                    name: node.name,
                    op: node.op,
                    instructions: mean(&|c| c.instructions),
                    memory_accesses: mean(&|c| c.memory_accesses),
                }
            })
            .collect())
    }

    /// Runs the guest with `guest_args` under the plugin; returns its checked result, the
    /// guest's stdout and the wall time.
    fn run_guest(
        &self,
        name: &str,
        tag: &str,
        guest_args: Vec<String>,
    ) -> Result<(PluginResult, Vec<u8>, f64), QemuError> {
        let results = self.work_dir.join("plugin-results");
        std::fs::create_dir_all(&results).map_err(|e| QemuError::io(&results, e))?;
        let out = results.join(format!("{name}-{tag}.json"));
        if out.exists() {
            std::fs::remove_file(&out).map_err(|e| QemuError::io(&out, e))?;
        }
        let mut cmd = self.qemu_prefix_args(&out);
        cmd.extend(guest_args);
        let started = Instant::now();
        let output = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env_clear()
            .envs(self.guest_env())
            .current_dir(self.pinned_dir())
            .output()
            .map_err(|e| QemuError::Run(format!("{}: cannot start: {e}", cmd[0])))?;
        let wall_s = started.elapsed().as_secs_f64();
        if !output.status.success() {
            return Err(QemuError::Run(format!(
                "{name}: guest failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let text = std::fs::read_to_string(&out).map_err(|e| {
            QemuError::Run(format!(
                "{name}: the plugin wrote no result at {} ({e}); stderr: {}",
                out.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        })?;
        let result: PluginResult = serde_json::from_str(&text)
            .map_err(|e| QemuError::Run(format!("{}: bad plugin result: {e}", out.display())))?;
        if result.schema != 1 || result.roi_open_at_exit || result.unmatched_stops != 0 {
            return Err(QemuError::Run(format!(
                "{}: unbalanced region-of-interest markers (schema {}, open at exit {}, unmatched stops {})",
                out.display(),
                result.schema,
                result.roi_open_at_exit,
                result.unmatched_stops
            )));
        }
        Ok((result, output.stdout, wall_s))
    }

    /// Runs `name` (already installed) once and returns its counts per measured inference.
    /// `tag` keeps the plugin result files of repeated runs apart.
    pub fn count(&self, name: &str, tag: &str) -> Result<RunCounts, QemuError> {
        let guest_model = format!("models/{name}.onnx");
        let (result, stdout, wall_s) = self.run_guest(name, tag, self.guest_args(&guest_model))?;
        let runs = self.runs.max(1);
        if result.rois.len() < runs {
            return Err(QemuError::Run(format!(
                "{name}: the guest marked {} region(s) of interest, expected at least {runs}: does edge-run honour EDGE_ROI=1?",
                result.rois.len()
            )));
        }
        // The runtime may mark its first and warm-up runs too: the measured ones are last.
        let measured = &result.rois[result.rois.len() - runs..];
        let sum =
            |f: &dyn Fn(&PluginCounts) -> u64| measured.iter().map(f).sum::<u64>() / runs as u64;
        let guest = serde_json::from_slice(&stdout).unwrap_or(serde_json::Value::Null);
        Ok(RunCounts {
            rois_seen: result.rois.len() as u64,
            inferences: runs as u64,
            instructions: sum(&|c| c.instructions),
            memory_accesses: sum(&|c| c.memory_accesses),
            loads: sum(&|c| c.loads),
            stores: sum(&|c| c.stores),
            l1d_accesses: self
                .cache
                .then(|| sum(&|c| c.l1d.as_ref().map_or(0, |l| l.accesses))),
            l1d_misses: self
                .cache
                .then(|| sum(&|c| c.l1d.as_ref().map_or(0, |l| l.misses))),
            guest,
            wall_s,
        })
    }
}
