//! A real SMTP server on 127.0.0.1 that keeps every message it accepts (aiosmtpd, run by
//! tests/support/smtp_sink.py), for the acknowledgement tests to read.

use super::common::free_port;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

/// One accepted message: the envelope recipients and the bytes as received.
pub struct Received {
    pub rcpt: String,
    pub raw: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        let msg = mail_parser::MessageParser::default().parse(self.raw.as_bytes())?;
        msg.header_raw(name).map(|v| v.trim().to_string())
    }

    pub fn subject(&self) -> String {
        let msg = mail_parser::MessageParser::default()
            .parse(self.raw.as_bytes())
            .unwrap();
        msg.subject().unwrap_or_default().to_string()
    }

    pub fn body(&self) -> String {
        let msg = mail_parser::MessageParser::default()
            .parse(self.raw.as_bytes())
            .unwrap();
        msg.body_text(0).unwrap_or_default().to_string()
    }
}

impl SmtpSink {
    /// Starts a sink on a free port, keeping messages under `dir`.
    pub fn start(dir: &Path) -> SmtpSink {
        let mut s = SmtpSink {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        s.resume();
        s
    }

    /// Picks a port but does not listen yet (a relay that is down).
    pub fn down(dir: &Path) -> SmtpSink {
        SmtpSink {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        }
    }

    /// Starts (again) on the same port.
    pub fn resume(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "the SMTP sink did not start");
        self.child = Some(child);
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|x| x == "eml"));
        names.sort();
        names
            .into_iter()
            .map(|p| Received {
                rcpt: std::fs::read_to_string(p.with_extension("rcpt")).unwrap_or_default(),
                raw: std::fs::read_to_string(&p).unwrap(),
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub fn wait_for(&self, n: usize, log: impl Fn() -> String) -> Vec<Received> {
        let ok = super::common::wait_for(Duration::from_secs(20), || self.messages().len() >= n);
        assert!(
            ok,
            "expected {n} messages at the SMTP sink, got {}:\n{}",
            self.messages().len(),
            log()
        );
        self.messages()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Python that has aiosmtpd: `PHANANH_TEST_PYTHON`, else the system's (Debian's
/// python3-aiosmtpd), else whatever `python3` is on PATH.
fn python() -> String {
    if let Ok(p) = std::env::var("PHANANH_TEST_PYTHON") {
        return p;
    }
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p.to_string();
        }
    }
    panic!("no Python with aiosmtpd: apt-get install python3-aiosmtpd (or pip install aiosmtpd)");
}
