//! A throwaway Mosquitto broker on a free loopback port, for tests and benchmarks.
//!
//! Started from a temporary config file; killed (by its own handle) when dropped.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian and Ubuntu install the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A running Mosquitto; killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Holds the config file for as long as the broker runs.
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker, or says why not (not installed, did not come up).
    pub fn start() -> Result<Mosquitto, String> {
        let binary = std::env::var("MOSQUITTO").unwrap_or_else(|_| MOSQUITTO.to_owned());
        if !Path::new(&binary).exists() {
            return Err(format!("{binary} is not installed"));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let conf = dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
        writeln!(
            f,
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_queued_messages 0\n"
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{binary} did not listen on port {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mosquitto { child, port, _dir: dir })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
