//! The unit's own commands, run as systemd runs them: `ExecStartPre` checks, `ExecStart` speaks
//! the notify protocol (READY, WATCHDOG, RELOADING, STOPPING) on $NOTIFY_SOCKET, `ExecReload`
//! checks and sends HUP. No systemd is needed: the test plays the service manager.

use super::common::{BIN, Env};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

const UNITS: [&str; 3] = [
    "phananh.service",
    "phananh-purge.service",
    "phananh-purge.timer",
];

fn unit_text(name: &str) -> String {
    std::fs::read_to_string(format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The values of `key=` lines in the shipped unit.
fn unit_lines(key: &str) -> Vec<String> {
    lines_of("phananh.service", key)
}

fn lines_of(unit: &str, key: &str) -> Vec<String> {
    unit_text(unit)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.replace("/usr/bin/phananh", BIN))
        .collect()
}

fn wait_for_message(sock: &UnixDatagram, needle: &str, seen: &mut Vec<String>) -> bool {
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == needle) {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_unit_commands_work_as_systemd_runs_them() {
    let env = Env::new("", "");
    let config_env = unit_lines("Environment");
    assert_eq!(
        config_env,
        vec!["PHANANH_CONFIG=/etc/phananh/phananh.toml".to_string()]
    );
    assert_eq!(unit_lines("Type"), vec!["notify"]);
    let sh = |cmd: &str, pid: Option<u32>| {
        let cmd = cmd.replace("$MAINPID", &pid.map(|p| p.to_string()).unwrap_or_default());
        Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PHANANH_CONFIG", &env.config)
            .output()
            .unwrap()
    };

    for pre in unit_lines("ExecStartPre") {
        let out = sh(&pre, None);
        assert!(
            out.status.success(),
            "{pre}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = unit_lines("ExecStart").remove(0);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {start}"))
        .env("PHANANH_CONFIG", &env.config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::fs::File::create(env.path("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    assert!(
        wait_for_message(&sock, "READY=1", &mut seen),
        "{seen:?}\n{}",
        env.log()
    );
    assert!(wait_for_message(&sock, "WATCHDOG=1", &mut seen), "{seen:?}");

    for reload in unit_lines("ExecReload") {
        let out = sh(&reload, Some(child.id()));
        assert!(
            out.status.success(),
            "{reload}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(
        wait_for_message(&sock, "RELOADING=1", &mut seen),
        "{seen:?}"
    );
    assert!(wait_for_message(&sock, "READY=1", &mut seen), "{seen:?}");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_for_message(&sock, "STOPPING=1", &mut seen), "{seen:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", env.log());
}

/// The shipped units as this machine's systemd reads them (`systemd-analyze`, systemd's own
/// parser; PID 1 here is not systemd, so the units cannot be started for real). The binary's
/// path is replaced by one that exists, as verify checks it.
fn analyzed_copy(dir: &std::path::Path, unit: &str) -> std::path::PathBuf {
    let path = dir.join(unit);
    std::fs::write(&path, unit_text(unit).replace("/usr/bin/phananh", BIN)).unwrap();
    path
}

#[test]
fn systemd_accepts_every_shipped_unit_without_a_warning() {
    let env = Env::new("", "");
    let paths: Vec<_> = UNITS
        .iter()
        .map(|u| analyzed_copy(&env.path(""), u))
        .collect();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed for this test");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn both_services_stay_in_systemds_safe_exposure_range() {
    let env = Env::new("", "");
    // systemd scores 0–10 (shown ×10 to --threshold): the daemon needs sockets, the purge none.
    for (unit, threshold) in [("phananh.service", "20"), ("phananh-purge.service", "10")] {
        let path = analyzed_copy(&env.path(""), unit);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg(&path)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{unit} is more exposed than {threshold}:\n{}",
            report.lines().last().unwrap_or_default()
        );
    }
}

#[test]
fn the_purge_timer_runs_the_purge_with_the_configured_retention() {
    let env = Env::new("", "");
    env.ingest_fixture("01-utf8-nfc.eml");
    assert_eq!(
        lines_of("phananh-purge.timer", "Persistent"),
        vec!["true"],
        "a night missed runs at boot"
    );
    let vars: Vec<(String, String)> = lines_of("phananh-purge.service", "Environment")
        .iter()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    assert!(vars.contains(&("PHANANH_RETENTION".into(), "365d".into())));
    let start = lines_of("phananh-purge.service", "ExecStart").remove(0);
    let run = |retention: &str| {
        // systemd's ${VAR} is one word, as the shell's "${VAR}" is.
        let cmd = start.replace("${PHANANH_RETENTION}", "\"${PHANANH_RETENTION}\"");
        Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PHANANH_CONFIG", &env.config)
            .env("PHANANH_RETENTION", retention)
            .output()
            .unwrap()
    };
    let kept = run("365d");
    assert!(kept.status.success(), "{kept:?}");
    assert!(String::from_utf8_lossy(&kept.stdout).contains("0 reports anonymised"));
    std::thread::sleep(Duration::from_millis(1100));
    // An operator's drop-in with a short period: the report received a second ago is purged.
    let purged = run("1s");
    assert!(
        String::from_utf8_lossy(&purged.stdout).contains("1 reports anonymised"),
        "{purged:?}"
    );
}
