//! A fresh swtpm per test: its own state directory and its own ports, killed on drop.
//!
//! Each TPM test starts its own simulator, so TPM tests never share object memory or a
//! connection (swtpm serves one client at a time) and can run in parallel. `swtpm` must be
//! installed (`ci/setup.sh` does it): a missing simulator fails the test, it never skips.
//! Set `SWTPM` to use another binary.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Swtpm {
    pub port: u16,
    state: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    std::env::var_os("SWTPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("swtpm"))
}

/// Ports this test process has handed to a simulator. Tests run in parallel threads: a
/// port pair must never be handed out twice, nor overlap another pair (`p + 1` of one
/// being `p` of the next), or two simulators race for the same socket.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A port `p` with `p + 1` free as well (the swtpm TCTI uses the next port for control),
/// neither overlapping a pair handed out before.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().expect("addr").port();
        if p >= u16::MAX - 1 || TcpListener::bind(("127.0.0.1", p + 1)).is_err() {
            continue;
        }
        let mut used = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains(&p) || used.contains(&(p + 1)) || used.contains(&(p - 1)) {
            continue;
        }
        used.insert(p);
        used.insert(p + 1);
        return p;
    }
    panic!("no free port pair for swtpm");
}

impl Swtpm {
    /// Starts a manufactured-fresh TPM 2.0 simulator.
    pub fn start() -> Swtpm {
        let state = tempfile::tempdir().expect("tempdir");
        let mut t = Swtpm {
            port: 0,
            state,
            child: None,
        };
        for _ in 0..5 {
            t.port = free_port_pair();
            if t.spawn() {
                return t;
            }
        }
        panic!("swtpm did not start (is it installed? ci/setup.sh installs it)");
    }

    /// The TCTI string keygate uses to reach this simulator.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new(binary())
            .args(["socket", "--tpm2"])
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.port + 1
            ))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state.path().display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run swtpm ({}): {e}", binary().display()));
        self.child = Some(child);
        // Wait until it accepts connections on the control port (a guard against a hung
        // start, not a timing assertion).
        for _ in 0..200 {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            // Both sockets answer and the process is still ours (another program could
            // hold a port, making swtpm exit while the connect succeeds).
            if TcpStream::connect(("127.0.0.1", self.port + 1)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.stop();
        false
    }

    /// Kills the simulator; its state directory stays, like a powered-off chip.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Power-cycles the TPM: same state (seeds, NV), all transient objects gone.
    pub fn restart(&mut self) {
        self.stop();
        // The port can be briefly taken by another test's outgoing connection (the
        // kernel hands out ephemeral ports from the same range): try again a few times.
        let restarted = (0..20).any(|_| {
            self.spawn() || {
                std::thread::sleep(Duration::from_millis(250));
                false
            }
        });
        assert!(restarted, "swtpm did not restart on port {}", self.port);
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}
