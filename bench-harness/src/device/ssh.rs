//! The system OpenSSH client, driven through `std::process::Command`, so that the
//! user's `~/.ssh/config`, agent, keys, ports and jump hosts apply unchanged.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

use super::DeviceError;

/// Set by the Ctrl-C handler; long waits poll it so that clean-up still runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler once per process (the ctrlc crate allows only one).
pub fn install_interrupt_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Failure only means another handler exists (an embedding program's); then
        // Ctrl-C kills us as usual and the remote directory stays behind.
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("edgebench: interrupted again, still cleaning up the remote directory");
            } else {
                eprintln!("edgebench: interrupted, cleaning up the remote directory");
            }
        });
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Whether the Ctrl-C flag is set now or becomes set within `grace`. A terminal's Ctrl-C
/// reaches the ssh client too (the whole foreground process group), and the client can
/// exit before the handler thread has set the flag: a failed ssh waits this long for it
/// before calling the failure a lost connection.
pub fn interrupted_within(grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if interrupted() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Quotes one word for the remote POSIX shell (`sh -c` run by sshd), so that a
/// path or model name is passed as data and never interpreted.
pub fn quote(word: &str) -> Result<String, DeviceError> {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .map_err(|_| DeviceError::Usage(format!("argument {word:?} contains a NUL byte")))
}

/// Quotes every word and joins them with spaces.
pub fn quote_all<S: AsRef<str>>(words: &[S]) -> Result<String, DeviceError> {
    let quoted: Result<Vec<String>, DeviceError> =
        words.iter().map(|w| quote(w.as_ref())).collect();
    Ok(quoted?.join(" "))
}

/// How to reach one board.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// `user@host`, `host` or a `~/.ssh/config` alias.
    pub destination: String,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// Extra `-o` options, passed in order.
    pub options: Vec<String>,
    pub connect_timeout: Duration,
    /// `StrictHostKeyChecking=accept-new` instead of `yes`: first contact only.
    pub accept_new_host_key: bool,
}

/// Options that would weaken host-key checking or make ssh prompt; we set them.
const RESERVED_OPTIONS: &[&str] = &["stricthostkeychecking", "batchmode"];

impl SshTarget {
    /// Rejects destinations and options that would change what ssh does behind the
    /// user's back (a destination starting with '-' would be read as an option).
    pub fn validate(&self) -> Result<(), DeviceError> {
        if self.destination.is_empty() || self.destination.starts_with('-') {
            return Err(DeviceError::Usage(format!(
                "invalid ssh destination {:?}",
                self.destination
            )));
        }
        if self
            .destination
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(DeviceError::Usage(format!(
                "invalid ssh destination {:?} (contains whitespace)",
                self.destination
            )));
        }
        for opt in &self.options {
            let key = opt
                .split(|c: char| c == '=' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if RESERVED_OPTIONS.contains(&key.as_str()) {
                return Err(DeviceError::Usage(format!(
                    "--ssh-option {opt:?}: edgebench always uses BatchMode=yes and checks host keys; \
                     use --accept-new-host-key for a first contact"
                )));
            }
        }
        Ok(())
    }

    /// The destination without the user name, for messages and reports.
    pub fn host_label(&self) -> String {
        let host = self
            .destination
            .rsplit_once('@')
            .map_or(self.destination.as_str(), |(_, h)| h);
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    /// `ssh <options> -- destination remote_command`. ssh keeps the first value it
    /// gets for an option, so ours (host-key checking, batch mode) come first and
    /// cannot be overridden by `~/.ssh/config`; the user's `-o` come next and win
    /// over our keep-alive defaults.
    pub fn command(&self, remote_command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        let strict = if self.accept_new_host_key {
            "accept-new"
        } else {
            "yes"
        };
        cmd.arg("-T")
            .arg("-o")
            .arg("BatchMode=yes")
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={strict}"))
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                self.connect_timeout.as_secs().max(1)
            ));
        for opt in &self.options {
            cmd.arg("-o").arg(opt);
        }
        // A dead link is noticed within about 30 s even while the benchmark is silent.
        cmd.arg("-o")
            .arg("ServerAliveInterval=10")
            .arg("-o")
            .arg("ServerAliveCountMax=3");
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(identity) = &self.identity {
            cmd.arg("-i").arg(identity);
        }
        cmd.arg("--").arg(&self.destination).arg(remote_command);
        cmd.stdin(Stdio::null());
        cmd
    }
}

/// What a finished remote command gave back.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// ssh itself failed (connection, authentication, host key): it exits 255.
    pub fn ssh_failed(&self) -> bool {
        self.status.code() == Some(255)
    }

    /// The ssh client failed or was killed by a signal: what a Ctrl-C does to it.
    pub fn ssh_failed_or_killed(&self) -> bool {
        self.ssh_failed() || self.status.code().is_none()
    }

    /// The last non-empty stderr line, as the one-line cause in errors.
    pub fn cause(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message")
            .to_string()
    }

    pub fn host_key_problem(&self) -> bool {
        self.stderr.contains("Host key verification failed")
            || self
                .stderr
                .contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || self.stderr.contains("No ED25519 host key is known")
            || self.stderr.contains("host key is known")
    }
}

/// Where a remote command's standard input and output go.
pub enum Io<'a> {
    /// Collect stdout into memory.
    Capture,
    /// Collect stdout; also pass each stdout and stderr line to the callback as it comes.
    Stream(&'a (dyn Fn(&str) + Sync)),
    /// Send a local file as stdin; collect (small) stdout.
    Upload(&'a Path),
    /// Write stdout to this (temporary) file.
    Download(&'a Path),
}

/// Runs `cmd`, killing it after `timeout`, or at Ctrl-C unless `ignore_interrupt`.
pub fn run(
    mut cmd: Command,
    io: Io<'_>,
    timeout: Duration,
    what: &str,
    ignore_interrupt: bool,
) -> Result<Finished, DeviceError> {
    match &io {
        Io::Upload(path) => {
            let file = std::fs::File::open(path).map_err(|e| DeviceError::Local {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?;
            cmd.stdin(Stdio::from(file));
            cmd.stdout(Stdio::piped());
        }
        Io::Download(path) => {
            let file = std::fs::File::create(path).map_err(|e| DeviceError::Local {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })?;
            cmd.stdout(Stdio::from(file));
        }
        Io::Capture | Io::Stream(_) => {
            cmd.stdout(Stdio::piped());
        }
    }
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| DeviceError::Spawn {
        program: "ssh".into(),
        cause: e.to_string(),
    })?;
    let stream = match &io {
        Io::Stream(f) => Some(*f),
        _ => None,
    };
    let (status, stdout, stderr) = std::thread::scope(|scope| {
        let out_reader = child.stdout.take().map(|out| {
            scope.spawn(move || -> Vec<u8> {
                match stream {
                    Some(f) => read_lines(out, f),
                    None => {
                        let mut buf = Vec::new();
                        let mut out = out;
                        let _ = out.read_to_end(&mut buf);
                        buf
                    }
                }
            })
        });
        let err_reader = child.stderr.take().map(|err| {
            scope.spawn(move || -> Vec<u8> {
                match stream {
                    Some(f) => read_lines(err, f),
                    None => {
                        let mut buf = Vec::new();
                        let mut err = err;
                        let _ = err.read_to_end(&mut buf);
                        buf
                    }
                }
            })
        });
        let waited = wait_with_deadline(&mut child, timeout, ignore_interrupt);
        let stdout = out_reader
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = err_reader
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        waited.map(|status| (status, stdout, stderr))
    })
    .map_err(|end| match end {
        WaitEnd::TimedOut => DeviceError::Timeout {
            what: what.to_string(),
            secs: timeout.as_secs(),
        },
        WaitEnd::Interrupted => DeviceError::Interrupted,
        WaitEnd::Failed(cause) => DeviceError::Spawn {
            program: "ssh".into(),
            cause,
        },
    })?;
    Ok(Finished {
        status,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn read_lines(reader: impl Read, each: &(dyn Fn(&str) + Sync)) -> Vec<u8> {
    let mut all = Vec::new();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                all.extend_from_slice(&line);
                let text = String::from_utf8_lossy(&line);
                // Progress bars redraw with '\r'; show the last state of the line.
                let text = text.trim_end_matches(['\n', '\r']);
                let text = text.rsplit('\r').next().unwrap_or(text);
                each(text);
            }
        }
    }
    all
}

enum WaitEnd {
    TimedOut,
    Interrupted,
    Failed(String),
}

fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
    ignore_interrupt: bool,
) -> Result<ExitStatus, WaitEnd> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            kill(child);
            return Err(WaitEnd::TimedOut);
        }
        if !ignore_interrupt && interrupted() {
            kill(child);
            return Err(WaitEnd::Interrupted);
        }
        let slice = (deadline - now).min(Duration::from_millis(100));
        match child.wait_timeout(slice) {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => continue,
            Err(e) => {
                kill(child);
                return Err(WaitEnd::Failed(e.to_string()));
            }
        }
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            destination: "root@board".into(),
            port: Some(2222),
            identity: None,
            options: vec!["UserKnownHostsFile=/tmp/kh".into()],
            connect_timeout: Duration::from_secs(7),
            accept_new_host_key: false,
        }
    }

    #[test]
    fn quoting_survives_a_posix_shell_unchanged() {
        for word in [
            "plain",
            "x'; touch pwned; '",
            "$(id)",
            "`id`",
            "a b\tc",
            "\"q\"",
            "\\n",
            "",
        ] {
            let quoted = quote(word).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {quoted}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word, "{quoted}");
        }
        assert!(quote("nul\0byte").is_err());
    }

    #[test]
    fn host_key_checking_and_batch_mode_come_first_and_cannot_be_overridden() {
        let cmd = target().command("true");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let pos = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert!(pos("BatchMode=yes") < pos("UserKnownHostsFile=/tmp/kh"));
        assert!(pos("StrictHostKeyChecking=yes") < pos("UserKnownHostsFile=/tmp/kh"));
        assert!(args.contains(&"ConnectTimeout=7".to_string()));
        assert_eq!(&args[args.len() - 3..], ["--", "root@board", "true"]);

        let mut accept = target();
        accept.accept_new_host_key = true;
        let args: Vec<String> = accept
            .command("true")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"StrictHostKeyChecking=accept-new".to_string()));

        for bad in [
            "StrictHostKeyChecking=no",
            "stricthostkeychecking no",
            "BatchMode=no",
        ] {
            let mut t = target();
            t.options.push(bad.into());
            assert!(matches!(t.validate(), Err(DeviceError::Usage(_))), "{bad}");
        }
        let mut t = target();
        t.destination = "-oProxyCommand=evil".into();
        assert!(t.validate().is_err());
        assert!(target().validate().is_ok());
        assert_eq!(target().host_label(), "board:2222");
    }
}
