//! A throwaway installation: config, channels folder, Maildir and state under one temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_phananh");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/email")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Every .eml fixture, sorted.
pub fn all_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    v.sort();
    v
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
}

impl Env {
    /// A config with one maildir channel `mail` and the default spool sink; `extra` is appended to
    /// phananh.toml, `channel_extra` to channels/mail.toml.
    pub fn new(extra: &str, channel_extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("phananh.toml");
        std::fs::write(
            &config,
            format!("state_dir = \"state\"\nlisten = \"127.0.0.1:{port}\"\n{extra}\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        std::fs::write(
            dir.path().join("channels/mail.toml"),
            format!("kind = \"maildir\"\npath = \"../Maildir\"\nscan_interval = \"1s\"\n{channel_extra}\n"),
        )
        .unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.path().join("Maildir").join(sub)).unwrap();
        }
        Env { dir, config, port }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn maildir(&self) -> PathBuf {
        self.path("Maildir")
    }

    pub fn spool(&self) -> PathBuf {
        self.path("state/spool")
    }

    /// Runs a CLI verb against this installation.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("PHANANH_CONFIG")
            .output()
            .unwrap()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "phananh {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Ingests one bundled fixture through the `mail` channel; returns the tracking code printed.
    pub fn ingest_fixture(&self, name: &str) -> String {
        let out = self.cli_ok(&[
            "ingest",
            "--channel",
            "mail",
            fixture(name).to_str().unwrap(),
        ]);
        out.split_whitespace()
            .find(|w| w.starts_with("PA-"))
            .unwrap_or_else(|| panic!("no tracking code in: {out}"))
            .to_string()
    }

    /// Starts `phananh run`; stderr goes to a file under the temp dir (see `log`). The process is
    /// killed when the handle drops, so a failing test leaves no daemon behind.
    pub fn start(&self) -> Daemon {
        let log = std::fs::File::create(self.path("daemon.log")).unwrap();
        Daemon(
            Command::new(BIN)
                .arg("run")
                .arg("--config")
                .arg(&self.config)
                .env("PHANANH_LOG", "phananh=debug,info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// Delivers a message the way an MTA does: write to tmp/, rename into new/.
    pub fn deliver(&self, name: &str, bytes: &[u8]) {
        let tmp = self.maildir().join("tmp").join(name);
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.maildir().join("new").join(name)).unwrap();
    }

    pub fn count(&self, dir: &Path, ext: &str) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn spool_events(&self) -> Vec<serde_json::Value> {
        let mut v = Vec::new();
        if let Ok(d) = std::fs::read_dir(self.spool()) {
            for e in d.filter_map(|e| e.ok()) {
                if e.file_name().to_string_lossy().ends_with(".json") {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    v.push(serde_json::from_str(&text).unwrap());
                }
            }
        }
        v
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path("state/phananh.db")).unwrap()
    }
}

/// Every test that started a daemon ends with this check of its log: no e-mail address, no
/// Vietnamese phone number, and none of the fixtures' Messenger ids or names may appear in it. So
/// the whole suite's scenarios (mail, IMAP, Messenger, feeds, sinks, acknowledgements) prove that
/// logs carry no personal data, not one test written for it.
impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let log = self.log();
        if let Some(found) = personal_data_in(&log) {
            panic!("personal data {found:?} in the daemon log:\n{log}");
        }
    }
}

/// The first piece of personal data in `text`, if any.
pub fn personal_data_in(text: &str) -> Option<String> {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<Vec<regex::Regex>> = LazyLock::new(|| {
        [
            // Any e-mail address: citizens', and ours would not belong in a log line either.
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z0-9.-]+",
            // Vietnamese numbers as written and as stored (E.164).
            r"\b0\d{9}\b",
            r"\b0\d{2,3}[ .]\d{3}[ .]\d{3,4}\b",
            r"\+84\d{9}",
        ]
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect()
    });
    static FIXTURE_IDS: LazyLock<Vec<String>> = LazyLock::new(|| {
        // Messenger PSIDs and page-scoped ids of the Facebook fixtures, and names in them.
        let id = regex::Regex::new(r#""id"\s*:\s*"(\d{6,})""#).unwrap();
        let name = regex::Regex::new(r#""name"\s*:\s*"([^"]{3,})""#).unwrap();
        let mut out = vec!["Nguyễn Văn An".to_string(), "Hoàng Minh Tuấn".to_string()];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/facebook");
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.extend(id.captures_iter(&text).map(|c| c[1].to_string()));
            out.extend(name.captures_iter(&text).map(|c| c[1].to_string()));
        }
        out.sort();
        out.dedup();
        out
    });
    for p in PATTERNS.iter() {
        if let Some(m) = p.find(text) {
            return Some(m.as_str().to_string());
        }
    }
    FIXTURE_IDS
        .iter()
        .find(|n| text.contains(n.as_str()))
        .cloned()
}

/// A running daemon, killed on drop.
pub struct Daemon(pub Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Fails if the process uses more than a tenth of a core over 3 s: an idle daemon must idle.
pub fn assert_idles(pid: u32, log: impl Fn() -> String) {
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time(pid) - before;
    assert!(
        used < Duration::from_millis(300),
        "used {used:?} of CPU in 3 s while idle:\n{}",
        log()
    );
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" that closes the command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until `f` is true or the deadline passes; returns whether it became true.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// A realistic report mail, unique by `n` (Message-ID, sender and text).
pub fn message(n: usize) -> Vec<u8> {
    format!(
        "From: =?UTF-8?B?{name}?= <citizen{n}@example.com>\r\n\
         To: dttm@hue.example.vn\r\n\
         Subject: =?UTF-8?Q?=C4=90=C3=A8n_=C4=91=C6=B0=E1=BB=9Dng_h=E1=BB=8Fng_s=E1=BB=91_{n}?=\r\n\
         Date: Fri, 27 Nov 2026 08:00:00 +0700\r\n\
         Message-ID: <report-{n}@mail.example.com>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Đèn đường trên đường Lê Lợi, đoạn trước số {n}, bị hỏng nhiều ngày nay.\r\n\
         Buổi tối rất tối, người đi đường dễ bị tai nạn. Đề nghị sửa sớm.\r\n",
        name = "VHLhuqduIFbEg24gQW4=",
    )
    .into_bytes()
}

/// A plain HTTP/1.1 GET to the daemon; the whole response (status line, headers, body).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    std::io::Write::write_fmt(
        &mut s,
        format_args!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .ok()?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).ok()?;
    Some(out)
}
