//! `edgebench device` and `edgebench fleet` against real sshd instances on 127.0.0.1,
//! with the armv7 `edgebench` run on the "board" through qemu-arm (ci/qemu-run).
//!
//! Each test starts its own Debian sshd (openssh-server) on a free port, with a host
//! key and a user key made by ssh-keygen in a temp dir, and a client known_hosts
//! there too. Nothing is mocked: deploy, sha256 checks, the remote run, the fetch and
//! the clean-up all happen for real.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const SSHD: &str = "/usr/sbin/sshd";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Fails (never skips) when the OpenSSH parts are missing.
fn require_openssh() {
    assert!(
        Path::new(SSHD).is_file(),
        "{SSHD} is missing: install Debian's openssh-server (apt-get install openssh-server) to run the device tests"
    );
    for tool in ["ssh", "ssh-keygen"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success() || !o.stderr.is_empty())
            .unwrap_or(false)
            || Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: install openssh-client to run the device tests"
        );
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "edgebench-test",
            "-f",
        ])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen -f {}", path.display());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Keys and files of one "board": host key, user key, authorized_keys, known_hosts.
struct Board {
    dir: tempfile::TempDir,
    port: u16,
    sshd: Option<Child>,
}

impl Board {
    fn new() -> Board {
        require_openssh();
        let dir = tempfile::tempdir().expect("temp dir");
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("user_key"));
        std::fs::copy(
            dir.path().join("user_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("remote-tmp")).unwrap();
        let mut board = Board {
            dir,
            port: free_port(),
            sshd: None,
        };
        let host_pub = std::fs::read_to_string(board.path("host_key.pub")).unwrap();
        board.write_known_hosts(&host_pub);
        board.start();
        board
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_known_hosts(&self, public_key_line: &str) {
        let key: Vec<&str> = public_key_line.split_whitespace().take(2).collect();
        std::fs::write(
            self.path("known_hosts"),
            format!("[127.0.0.1]:{} {}\n", self.port, key.join(" ")),
        )
        .unwrap();
    }

    /// Starts sshd in the foreground (-D) and waits until it accepts connections.
    fn start(&mut self) {
        std::fs::create_dir_all("/run/sshd")
            .expect("mkdir -p /run/sshd (sshd's privilege separation dir)");
        let d = self.dir.path().display();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            port = self.port
        );
        std::fs::write(self.path("sshd_config"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))
            .unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        self.sshd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.sshd.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "sshd exited ({status}): {}",
                    std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills sshd and every session process below it: every connection drops at once.
    fn kill_everything(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let mut pids = vec![child.id()];
            let mut i = 0;
            while i < pids.len() {
                pids.extend(children_of(pids[i]));
                i += 1;
            }
            for pid in pids.iter().rev() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = child.wait();
        }
    }

    fn remote_tmp(&self) -> PathBuf {
        self.path("remote-tmp")
    }

    /// The options that point ssh at this board.
    fn ssh_args(&self) -> Vec<String> {
        vec![
            "--host".into(),
            format!("{}@127.0.0.1", user_name()),
            "--port".into(),
            self.port.to_string(),
            "--identity".into(),
            self.path("user_key").display().to_string(),
            "--ssh-option".into(),
            format!("UserKnownHostsFile={}", self.path("known_hosts").display()),
            "--ssh-option".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "--ssh-option".into(),
            "IdentitiesOnly=yes".into(),
            "--connect-timeout".into(),
            "5".into(),
        ]
    }

    fn remote_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.remote_tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.kill_everything();
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Fields after the ")" that ends the command name: state, ppid, ...
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn processes_with_cmdline(words: &[&str]) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.len() >= words.len() && args.iter().zip(words).all(|(a, w)| a == w) {
                n += 1;
            }
        }
    }
    n
}

/// The armv7 edgebench, built once per test run (dev profile: shares the deps that
/// `cargo test --target armv7-unknown-linux-gnueabihf` builds), or the binary named
/// by EDGEBENCH_TEST_ARMV7_EDGEBENCH.
fn armv7_edgebench() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Reuse a binary built elsewhere (e.g. by CI's armv7 job); it must exist.
        if let Some(path) = std::env::var_os("EDGEBENCH_TEST_ARMV7_EDGEBENCH") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "EDGEBENCH_TEST_ARMV7_EDGEBENCH={}: no such file",
                path.display()
            );
            return path;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo_root())
            .args([
                "build",
                "--target",
                "armv7-unknown-linux-gnueabihf",
                "-p",
                "bench-harness",
                "--bin",
                "edgebench",
                "--message-format=json-render-diagnostics",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build of the armv7 edgebench failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "edgebench")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the armv7 edgebench binary")
    })
}

/// The 12-MFLOP models, exported once into the shared target dir.
fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/device-test-models");
        model_zoo::export_models(&dir, Some(&twelve_mflop_models()), &Default::default())
            .expect("export the 12-MFLOP models");
        dir
    })
}

fn twelve_mflop_models() -> Vec<String> {
    model_zoo::benchmark_models()
        .into_iter()
        .filter(|m| m.budget_mflops == 12)
        .map(|m| m.name.to_string())
        .collect()
}

fn qemu_runner() -> String {
    repo_root().join("ci/qemu-run").display().to_string()
}

/// Few, short measurements: the point here is the plumbing, not the numbers.
fn tiny_measurement() -> Vec<String> {
    [
        "--min-runs=3",
        "--min-time=0s",
        "--max-time=10s",
        "--warmup-runs=1",
        "--warmup-time=0s",
        "--run-arg=--no-counters",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn edgebench(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgebench"))
        .current_dir(repo_root())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("edgebench runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("{}: {e}", path.display());
    }))
    .unwrap()
}

fn device_args(board: &Board, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["device".to_string(), "--target".into(), "imx6".into()];
    a.extend(board.ssh_args());
    a.extend([
        "--model-dir".into(),
        model_dir().display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--remote-tmp".into(),
        board.remote_tmp().display().to_string(),
    ]);
    a.extend(tiny_measurement());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn imx6_run_under_qemu_deploys_verifies_runs_fetches_and_cleans_up() {
    let board = Board::new();
    let binary = armv7_edgebench().display().to_string();
    // A remote parent directory full of shell metacharacters: every remote command
    // (mktemp, cat >, sha256sum, cd, run, cat, rm -rf) must take it as one word.
    let weird = board
        .remote_tmp()
        .join("x'; touch pwned; '$(touch pwned2)`touch pwned3`");
    std::fs::create_dir(&weird).unwrap();
    let out = board.path("results");
    let mut args = device_args(
        &board,
        &out,
        &[
            "--budget",
            "12",
            "--binary",
            &binary,
            "--remote-runner",
            &qemu_runner(),
        ],
    );
    let i = args.iter().position(|a| a == "--remote-tmp").unwrap();
    args[i + 1] = weird.display().to_string();
    let o = edgebench(&args);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(
        log.contains("verified sha256 of 4 file(s) on the device"),
        "{log}"
    );
    assert!(log.contains("removed remote"), "{log}");
    // The board's progress is streamed as it happens, not only the final tables.
    assert!(
        log.contains("progress: measure 12 MFLOPs")
            && log.contains("progress: 12 MFLOPs: ")
            && log.contains("rounds"),
        "{log}"
    );

    // The group's result: the armv7 binary's own report plus the board's facts.
    let group = read_json(&out.join("budget-12.json"));
    assert_eq!(group["schema"], "edgebench/device-group/v1");
    let names: Vec<String> = serde_json::from_value(group["models"].clone()).unwrap();
    assert_eq!(names, twelve_mflop_models());
    assert!(
        group["facts"]["kernel"]
            .as_str()
            .unwrap()
            .starts_with("Linux"),
        "{group}"
    );
    assert!(group["facts"]["cpuinfo"]
        .as_str()
        .unwrap()
        .contains("processor"));
    assert!(group["facts"]["loadavg_before"].is_string());
    let report = &group["report"];
    assert_eq!(report["schema"], "edgebench/report/v1");
    assert_eq!(
        report["environment"]["target_triple"], "armv7-unknown-linux-gnueabihf",
        "the report must come from the armv7 binary"
    );
    assert_eq!(report["options"]["target_profile"], "imx6");
    assert_eq!(report["models"].as_array().unwrap().len(), 3);
    for m in report["models"].as_array().unwrap() {
        assert!(m["samples_ms"].as_array().unwrap().len() >= 3, "{m}");
    }
    assert_eq!(
        report["claims"].as_array().unwrap().len(),
        2,
        "two claims at 12 MFLOPs"
    );

    // The merged reports.
    let device = read_json(&out.join("device-report.json"));
    assert_eq!(device["schema"], "edgebench/device-report/v1");
    assert_eq!(device["target"], "imx6");
    assert!(out.join("report.md").is_file());
    let merged = bench_harness::export::json::read_json(&out.join("report.json")).unwrap();
    assert_eq!(merged.models.len(), 3);

    // Clean-up, and no injection anywhere.
    let left: Vec<_> = std::fs::read_dir(&weird).unwrap().collect();
    assert!(
        left.is_empty(),
        "remote work directory left behind: {left:?}"
    );
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for dir in [board.remote_tmp(), PathBuf::from(home), out.clone()] {
        for f in ["pwned", "pwned2", "pwned3"] {
            assert!(
                !dir.join(f).exists(),
                "shell injection: {}",
                dir.join(f).display()
            );
        }
    }
    // No identity path in the results (keys are the user's business).
    for entry in std::fs::read_dir(&out).unwrap() {
        let t = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !t.contains("user_key"),
            "identity path written into results"
        );
    }

    // Results are never overwritten: the same --out again without --resume is refused.
    let again = edgebench(&args);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn a_wrong_host_key_is_refused_even_with_accept_new() {
    let board = Board::new();
    let other = board.path("other_host_key");
    keygen(&other);
    board.write_known_hosts(&std::fs::read_to_string(other.with_extension("pub")).unwrap());
    let exe = std::env::current_exe().unwrap().display().to_string();
    for extra in [vec![], vec!["--accept-new-host-key"]] {
        let out = board.path(&format!("results{}", extra.len()));
        let mut a = vec!["--budget", "12", "--binary", &exe];
        a.extend(extra.iter().copied());
        let o = edgebench(&device_args(&board, &out, &a));
        let log = text(&o);
        assert_eq!(o.status.code(), Some(1), "{log}");
        assert!(log.contains("host key of 127.0.0.1"), "{log}");
        assert!(
            board.remote_entries().is_empty(),
            "nothing may happen on a host with a wrong key"
        );
    }
    // Turning host-key checking off is not an option.
    let o = edgebench(&device_args(
        &board,
        &board.path("r"),
        &["--binary", &exe, "--ssh-option", "StrictHostKeyChecking=no"],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--accept-new-host-key"));
}

#[test]
fn first_contact_with_accept_new_then_a_hanging_remote_command_is_killed() {
    let board = Board::new();
    std::fs::write(board.path("known_hosts"), "").unwrap();
    let exe = std::env::current_exe().unwrap().display().to_string();
    let out = board.path("results");
    let model = &twelve_mflop_models()[0];
    let o = edgebench(&device_args(
        &board,
        &out,
        &[
            "--models",
            model,
            "--binary",
            &exe,
            "--accept-new-host-key",
            "--remote-runner",
            "sleep 997;",
            "--command-timeout",
            "3",
        ],
    ));
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("did not finish within 3 s"), "{log}");
    // First contact learned the key; the work directory and the hanging process are gone.
    let known = std::fs::read_to_string(board.path("known_hosts")).unwrap();
    let host_pub = std::fs::read_to_string(board.path("host_key.pub")).unwrap();
    assert!(
        known.contains(host_pub.split_whitespace().nth(1).unwrap()),
        "{known}"
    );
    assert!(
        board.remote_entries().is_empty(),
        "left behind: {:?}",
        board.remote_entries()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_cmdline(&["sleep", "997"]) > 0 {
        assert!(
            Instant::now() < deadline,
            "the hanging remote command was not killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unreachable_host_fails_within_the_connect_timeout() {
    require_openssh();
    // A port that accepts TCP but never speaks SSH.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap().display().to_string();
    let args: Vec<String> = [
        "device",
        "--host",
        "nobody@127.0.0.1",
        "--port",
        &port.to_string(),
        "--connect-timeout",
        "2",
        "--ssh-option",
        &format!("UserKnownHostsFile={}", dir.path().join("kh").display()),
        "--models",
        &twelve_mflop_models()[0],
        "--model-dir",
        &model_dir().display().to_string(),
        "--binary",
        &exe,
        "--out",
        &dir.path().join("out").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let start = Instant::now();
    let o = edgebench(&args);
    let took = start.elapsed();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("cannot reach 127.0.0.1"), "{log}");
    // Generous bound (2 s timeout + process start-up on a busy machine).
    assert!(took < Duration::from_secs(30), "took {took:?}");
    drop(silent);
}

#[test]
fn a_connection_killed_mid_run_keeps_finished_models_and_resume_does_the_rest() {
    let mut board = Board::new();
    let binary = armv7_edgebench().display().to_string();
    let out = board.path("results");
    let models = twelve_mflop_models();
    let list = format!("{},{}", models[0], models[1]);
    // The pause before each model gives the test a window to cut the connection
    // while the second model runs.
    let runner = format!("sleep 3.7; {}", qemu_runner());
    let args = device_args(
        &board,
        &out,
        &[
            "--models",
            &list,
            "--group-by",
            "model",
            "--binary",
            &binary,
            "--remote-runner",
            &runner,
        ],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgebench"))
        .current_dir(repo_root())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = out.join(format!("model-{}.json", models[0]));
    let second = out.join(format!("model-{}.json", models[1]));
    let deadline = Instant::now() + Duration::from_secs(600);
    // Cut when the first result is saved and the second model's run has started.
    while !(first.exists() && processes_with_cmdline(&["sleep", "3.7"]) > 0) {
        assert!(Instant::now() < deadline, "the first model never finished");
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "edgebench ended early: {status}: {}",
                text(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    board.kill_everything();
    let o = child.wait_with_output().unwrap();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("connection to 127.0.0.1"), "{log}");
    assert!(log.contains("lost during benchmark"), "{log}");
    assert!(log.contains("1 of 2 groups are saved"), "{log}");
    assert!(log.contains("--resume"), "{log}");
    assert!(!second.exists());
    let first_bytes = std::fs::read(&first).unwrap();
    // The dead session's directory stays on the board: the clean-up could not connect.
    for e in board.remote_entries() {
        std::fs::remove_dir_all(board.remote_tmp().join(e)).unwrap();
    }

    board.start();
    let mut resumed = args.clone();
    resumed.push("--resume".into());
    let i = resumed.iter().position(|a| a == "--remote-runner").unwrap();
    resumed[i + 1] = qemu_runner();
    let o = edgebench(&resumed);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("model-{}: already done", models[0])),
        "{log}"
    );
    assert!(
        log.contains("verified sha256 of 2 file(s)"),
        "only the missing model is deployed: {log}"
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        first_bytes,
        "a finished result was rewritten"
    );
    let second_json = read_json(&second);
    assert_eq!(second_json["models"][0], models[1].as_str());
    let device = read_json(&out.join("device-report.json"));
    assert_eq!(device["report"]["models"].as_array().unwrap().len(), 2);
    assert!(board.remote_entries().is_empty());

    // Nothing left to do: a third run says so and changes nothing.
    let o = edgebench(&resumed);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing to do"));
}

#[test]
fn a_fleet_of_two_boards_runs_in_parallel_with_claims_per_board() {
    let boards = [Board::new(), Board::new()];
    let binary = armv7_edgebench().display().to_string();
    let work = tempfile::tempdir().unwrap();
    let mut inventory = String::new();
    for (i, b) in boards.iter().enumerate() {
        inventory += &format!(
            "[[device]]\nname = \"board-{i}\"\nhost = \"{}@127.0.0.1\"\ntarget = \"imx6\"\n\
             port = {}\nidentity = \"{}\"\nssh_options = [\"UserKnownHostsFile={}\", \"IdentitiesOnly=yes\"]\n\
             remote_runner = \"{}\"\nremote_tmp = \"{}\"\n\n",
            user_name(),
            b.port,
            b.path("user_key").display(),
            b.path("known_hosts").display(),
            qemu_runner(),
            b.remote_tmp().display(),
        );
    }
    let inventory_path = work.path().join("devices.toml");
    std::fs::write(&inventory_path, inventory).unwrap();
    let out = work.path().join("fleet");
    let mut args: Vec<String> = vec![
        "fleet".into(),
        "--inventory".into(),
        inventory_path.display().to_string(),
        "--budget".into(),
        "12".into(),
        "--binary".into(),
        binary,
        "--model-dir".into(),
        model_dir().display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(tiny_measurement());
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgebench"))
        .current_dir(repo_root())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Parallel: at some moment both boards hold a remote work directory. (The pipes
    // are small; edgebench's output until then fits in them.)
    let mut both_busy = false;
    while !both_busy && child.try_wait().unwrap().is_none() {
        both_busy = boards.iter().all(|b| !b.remote_entries().is_empty());
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(
        both_busy,
        "the two boards never ran at the same time: {log}"
    );
    let fleet = read_json(&out.join("fleet-report.json"));
    assert_eq!(fleet["schema"], "edgebench/fleet-report/v1");
    let listed = fleet["boards"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for (i, b) in listed.iter().enumerate() {
        assert_eq!(b["name"], format!("board-{i}"));
        assert_eq!(b["status"], "ok");
        assert_eq!(b["report"]["report"]["claims"].as_array().unwrap().len(), 2);
        assert!(out.join(format!("board-{i}/budget-12.json")).is_file());
    }
    let md = std::fs::read_to_string(out.join("fleet-report.md")).unwrap();
    assert!(md.contains("| claim | board-0 | board-1 |"), "{md}");
    for b in &boards {
        assert!(b.remote_entries().is_empty());
    }
}

/// The user's own model file, named with shell metacharacters: its name reaches the remote
/// file system, the sha256 check, the remote `edgebench run` and the report as one word,
/// and nothing it contains runs anywhere.
#[test]
fn a_model_file_named_with_shell_metacharacters_runs_as_one_word() {
    let board = Board::new();
    let binary = armv7_edgebench().display().to_string();
    let mine = board.path("mine");
    std::fs::create_dir_all(&mine).unwrap();
    // No '/' in a file name, so each payload climbs out of the remote work dir with `cd ..`
    // into remote-tmp, where the test looks for its marker.
    let name = "net'; cd ..; touch pwned; '$(cd ..; touch pwned2)`cd ..; touch pwned3` \"&|<>*?";
    let file = mine.join(format!("{name}.onnx"));
    std::fs::copy(model_dir().join("fd_mobilenet_0.25.onnx"), &file).unwrap();
    let out = board.path("results");
    let file_arg = file.display().to_string();
    let args = device_args(
        &board,
        &out,
        &[
            "--model-file",
            &file_arg,
            "--binary",
            &binary,
            "--remote-runner",
            &qemu_runner(),
        ],
    );
    let o = edgebench(&args);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(
        log.contains("verified sha256 of 2 file(s) on the device"),
        "{log}"
    );
    assert!(log.contains("removed remote"), "{log}");

    let group = read_json(&out.join("model-files.json"));
    let names: Vec<String> = serde_json::from_value(group["models"].clone()).unwrap();
    assert_eq!(names, vec![name.to_string()]);
    let report = &group["report"];
    assert_eq!(
        report["environment"]["target_triple"],
        "armv7-unknown-linux-gnueabihf"
    );
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["name"], name);
    assert_eq!(models[0]["group"], "model files");
    assert_eq!(models[0]["family"], "other");
    assert!(models[0]["samples_ms"].as_array().unwrap().len() >= 3);

    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for dir in [
        board.remote_tmp(),
        PathBuf::from(home),
        out.clone(),
        mine.clone(),
        repo_root(),
    ] {
        for f in ["pwned", "pwned2", "pwned3"] {
            assert!(
                !dir.join(f).exists(),
                "shell injection: {}",
                dir.join(f).display()
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(board.remote_tmp())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "remote work directory left behind: {left:?}"
    );
}

/// Ctrl-C in the middle of a remote benchmark, as a terminal sends it (SIGINT to the whole
/// foreground process group, so the ssh client dies too): edgebench reconnects, kills the
/// remote run, removes the remote directory and exits with 130.
#[test]
fn ctrl_c_mid_run_kills_the_remote_run_and_removes_the_remote_directory() {
    use std::os::unix::process::CommandExt;
    let board = Board::new();
    let binary = armv7_edgebench().display().to_string();
    let out = board.path("results");
    let models = twelve_mflop_models();
    // A remote step that is still running when the interrupt comes, and recognisable.
    let runner = format!("sleep 47.3; {}", qemu_runner());
    let args = device_args(
        &board,
        &out,
        &[
            "--models",
            &models[0],
            "--binary",
            &binary,
            "--remote-runner",
            &runner,
        ],
    );
    let child = Command::new(env!("CARGO_BIN_EXE_edgebench"))
        .current_dir(repo_root())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let deadline = Instant::now() + Duration::from_secs(300);
    while processes_with_cmdline(&["sleep", "47.3"]) == 0 {
        assert!(
            Instant::now() < deadline,
            "the remote benchmark never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(board.remote_entries().len(), 1, "one remote work directory");
    let st = Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    assert!(log.contains("removed remote"), "{log}");
    assert!(
        board.remote_entries().is_empty(),
        "remote work directory left behind: {:?}\n{log}",
        board.remote_entries()
    );
    // The remote run's process group was killed, not left to finish on the board.
    let gone = Instant::now() + Duration::from_secs(10);
    while processes_with_cmdline(&["sleep", "47.3"]) > 0 {
        assert!(
            Instant::now() < gone,
            "the remote run still runs after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !out.join("budget-12.json").exists(),
        "no result for the interrupted group"
    );
}
