//! The one Mosquitto launcher of the workspace: the end-to-end tests, the agent's
//! durability tests and benchmark, firmware-sim's broker test and benchmark (a
//! dev-dependency) and the side-by-side `bench` all start their brokers here.
//!
//! [`Mosquitto::launch`] is the mechanism: a binary, an address, a whole configuration, and
//! where its log goes; it fails with a [`MosquittoError`]. The `start_*` functions are the
//! tests' policy on top: a free loopback port, the test configuration, and a skip (or, with
//! `EDGEWATCH_REQUIRE_MOSQUITTO=1`, a failure) when Mosquitto is not installed.

use edgewatch::broker;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs Mosquitto, and the other usual places.
pub const MOSQUITTO_PATHS: &[&str] =
    &["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/bin/mosquitto"];

/// How long a broker may take to listen.
const START_WAIT: Duration = Duration::from_secs(15);

/// Where a broker's log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// To this process's stderr (the config says `log_dest stderr`): a test's output.
    Inherit,
    /// To `log.txt` in the broker's own directory, for [`Mosquitto::log_tail`].
    File,
}

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    /// Its directory or configuration file could not be written.
    #[error("mosquitto set-up: {0}")]
    Setup(#[source] std::io::Error),
    /// The binary could not be run.
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: PathBuf, source: std::io::Error },
    /// It exited before listening (a bad configuration, a port in use).
    #[error("mosquitto exited before listening on {addr}: {status}")]
    Exited { addr: SocketAddr, status: std::process::ExitStatus },
    /// It did not listen in time.
    #[error("mosquitto did not listen on {addr} within {within:?}")]
    NotListening { addr: SocketAddr, within: Duration },
}

/// A Mosquitto broker process; killed (by its own handle) and reaped on drop.
#[derive(Debug)]
pub struct Mosquitto {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process: its pid for CPU measurements, killed on drop.
    child: Child,
    /// Holds its configuration (and log) for as long as it runs.
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// The `mosquitto` binary: `$MOSQUITTO` if set, else the first of [`MOSQUITTO_PATHS`].
    pub fn binary() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("MOSQUITTO") {
            return Some(PathBuf::from(bin)).filter(|p| p.is_file());
        }
        MOSQUITTO_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
    }

    /// Starts `bin` with `config` (the whole file, `listener` line included) and waits until
    /// it listens on `addr`.
    pub fn launch(bin: &Path, addr: SocketAddr, config: &str, log: Log) -> Result<Mosquitto, MosquittoError> {
        let dir = tempfile::tempdir().map_err(MosquittoError::Setup)?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config).map_err(MosquittoError::Setup)?;
        let stderr = match log {
            Log::Inherit => Stdio::inherit(),
            Log::File => Stdio::from(std::fs::File::create(dir.path().join("log.txt")).map_err(MosquittoError::Setup)?),
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| MosquittoError::Spawn { bin: bin.to_owned(), source })?;
        // From here on, dropping `broker` kills the process, whatever goes wrong.
        let mut broker = Mosquitto { addr, child, dir };
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(MosquittoError::Exited { addr, status });
            }
            if start.elapsed() > START_WAIT {
                return Err(MosquittoError::NotListening { addr, within: START_WAIT });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(broker)
    }

    /// Starts Mosquitto on `addr` (a free port when `None`).
    pub fn start_on(addr: Option<SocketAddr>) -> Option<Mosquitto> {
        Mosquitto::start_with(addr, None)
    }

    /// Starts Mosquitto with its persistence file in `persist_dir`, so sessions and queued
    /// messages survive a graceful restart.
    pub fn start_with(addr: Option<SocketAddr>, persist_dir: Option<&Path>) -> Option<Mosquitto> {
        Mosquitto::start_configured(addr, persist_dir, "")
    }

    /// The same with extra configuration lines (`max_inflight_messages 1000`, ...).
    pub fn start_configured(addr: Option<SocketAddr>, persist_dir: Option<&Path>, extra: &str) -> Option<Mosquitto> {
        let required = std::env::var("EDGEWATCH_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1");
        let Some(bin) = Mosquitto::binary() else {
            assert!(
                !required,
                "EDGEWATCH_REQUIRE_MOSQUITTO=1 but mosquitto is not installed (apt-get install mosquitto)"
            );
            eprintln!(
                "SKIP (mosquitto): not installed; install it, or set EDGEWATCH_REQUIRE_MOSQUITTO=1 to make this a failure"
            );
            return None;
        };
        let addr = addr.unwrap_or_else(|| broker::free_port().expect("free port"));
        let persistence = match persist_dir {
            // Started as root, Mosquitto drops to the `mosquitto` user unless told
            // otherwise, and then cannot write its file into our root-owned temp dir
            // ("Error: Permission denied", and the sessions are silently gone after a
            // restart). `user root` keeps it as it was started; ignored when not root.
            Some(d) => {
                format!("persistence true\npersistence_location {}/\nautosave_interval 1\nuser root", d.display())
            }
            None => "persistence false".to_owned(),
        };
        let config = format!(
            "listener {} {}\nallow_anonymous true\n{persistence}\nlog_dest stderr\nlog_type error\nmax_packet_size 1048576\n{extra}\n",
            addr.port(),
            addr.ip(),
        );
        Some(Mosquitto::launch(&bin, addr, &config, Log::Inherit).unwrap_or_else(|e| panic!("{e}")))
    }

    pub(crate) fn start() -> Option<Mosquitto> {
        Mosquitto::start_on(None)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log ([`Log::File`]; empty otherwise), for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("log.txt")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Stops it gracefully (SIGTERM: it writes its persistence file) and waits.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
