//! The imap channel against a real Dovecot on 127.0.0.1 (tests/support/dovecot.sh).

use super::common::{Env, http_get, message, signal, wait_for};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "mat-khau-thu";

struct Dovecot {
    _dir: tempfile::TempDir,
    root: PathBuf,
    child: Child,
    port: u16,
    tls_port: u16,
}

impl Dovecot {
    fn start() -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        // Dovecot drops to nobody when run as root: it must be able to reach its folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("dv");
        let (port, tls_port) = (super::common::free_port(), super::common::free_port());
        let child = spawn(&root, port, tls_port);
        let up = wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
        });
        let d = Dovecot {
            _dir: dir,
            root,
            child,
            port,
            tls_port,
        };
        assert!(up, "dovecot did not start: {}", d.log());
        d
    }

    /// Kills the server hard and starts it again on the same folder and ports.
    fn restart(&mut self) {
        self.kill_all();
        self.child = spawn(&self.root, self.port, self.tls_port);
        let port = self.tls_port;
        assert!(wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.parent().unwrap().join("dovecot.log")).unwrap_or_default()
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.root.join("mail").join(user).join("Maildir")
    }

    /// Delivers like Dovecot's own LDA would: into the user's Maildir new/.
    fn deliver(&self, user: &str, name: &str, bytes: &[u8]) {
        let md = self.maildir(user);
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        std::fs::write(md.join("tmp").join(name), bytes).unwrap();
        std::fs::rename(md.join("tmp").join(name), md.join("new").join(name)).unwrap();
        chown_nobody(&self.root.join("mail"));
    }

    fn count(&self, dir: &Path) -> usize {
        ["new", "cur"]
            .iter()
            .map(|s| {
                std::fs::read_dir(dir.join(s))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Dovecot {
    /// The master and every process it started (they share its process group): a crash, not a
    /// shutdown, so open connections break.
    fn kill_all(&mut self) {
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        // A killed Dovecot leaves its mailbox locks; a restarted one waits out their two-minute
        // timeout before serving the mailbox. What is tested here is our side's recovery.
        remove_locks(&self.root.join("mail"));
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Runs tests/support/dovecot.sh in a process group of its own, so killing the group kills every
/// Dovecot process; its log goes to dovecot.log beside `root` (appended across restarts).
fn spawn(root: &Path, port: u16, tls_port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.parent().unwrap().join("dovecot.log"))
        .unwrap();
    Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/dovecot.sh"
    ))
    .arg(root)
    .arg(port.to_string())
    .arg(tls_port.to_string())
    .arg(PASSWORD)
    .stdout(Stdio::null())
    .stderr(log)
    .process_group(0)
    .spawn()
    .expect("tests/support/dovecot.sh (needs dovecot-imapd and openssl; .ci/run installs them)")
}

fn remove_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            remove_locks(&p);
        } else if p.extension().is_some_and(|x| x == "lock") {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// As root, Dovecot runs as nobody and must own the mail it serves.
fn chown_nobody(path: &Path) {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    unsafe { libc::chown(c.as_ptr(), 65534, 65534) };
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_nobody(&e.unwrap().path());
        }
    }
}

/// An installation whose only channel reads Dovecot's mailbox of `user`.
fn env_for(dv: &Dovecot, user: &str, extra: &str) -> Env {
    let env = Env::new("", "");
    std::fs::remove_file(env.path("channels/mail.toml")).unwrap();
    std::fs::write(env.path("imap.pass"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(
        env.path("channels/dttm.toml"),
        format!(
            "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{user}\"\npassword_file = \"../imap.pass\"\npoll_interval = \"2s\"\n{extra}\n",
            dv.port
        ),
    )
    .unwrap();
    env
}

#[test]
fn a_mailbox_is_drained_once_moved_after_commit_and_watched_with_idle() {
    let dv = Dovecot::start();
    for n in 0..50 {
        dv.deliver("dttm", &format!("17000{n:05}.M{n}P1.mx"), &message(n));
    }
    let env = env_for(&dv, "dttm", "");
    let child = env.start();
    let processed = dv.maildir("dttm").join(".Processed");
    let drained = wait_for(Duration::from_secs(60), || {
        env.spool_events().len() == 50 && dv.count(&processed) == 50
    });
    assert!(
        drained,
        "spool {} processed {}\n{}\n{}",
        env.spool_events().len(),
        dv.count(&processed),
        env.log(),
        dv.log()
    );
    assert_eq!(dv.count(&dv.maildir("dttm")), 0, "INBOX must be empty");

    // New mail while the channel is idling.
    dv.deliver("dttm", "1800000000.M1P1.mx", &message(100));
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 51),
        "{}",
        env.log()
    );
    assert!(env.log().contains("idle=true"), "{}", env.log());
    signal(&child, libc::SIGTERM);
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let db = env.db();
    let reports: i64 = db
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(reports, 51);
    let (validity, last): (i64, i64) = db
        .query_row(
            "SELECT uidvalidity, last_uid FROM imap_cursors WHERE channel = 'dttm'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(validity > 0 && last == 51, "cursor {validity}/{last}");
}

#[test]
fn tls_with_a_private_ca_works_and_mail_is_flagged_when_asked() {
    let dv = Dovecot::start();
    for n in 0..3 {
        dv.deliver("hue", &format!("17000{n:05}.M{n}P1.mx"), &message(n));
    }
    let env = env_for(&dv, "hue", "");
    let ca = dv.root.join("ca.pem");
    std::fs::write(
        env.path("channels/dttm.toml"),
        format!(
            "kind = \"imap\"\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = \"{}\"\nusername = \"hue\"\npassword_file = \"../imap.pass\"\nafter_ingest = \"flag\"\n",
            dv.tls_port,
            ca.display()
        ),
    )
    .unwrap();
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 3),
        "{}\n{}",
        env.log(),
        dv.log()
    );
    drop(child);
    // Flagged, not moved: still in the mailbox, marked seen.
    let cur: Vec<String> = std::fs::read_dir(dv.maildir("hue").join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cur.len(), 3, "{cur:?}");
    assert!(
        cur.iter().all(|n| n.contains(":2,") && n.contains('S')),
        "{cur:?}"
    );
}

#[test]
fn a_refused_password_waits_for_the_operator_and_a_reload_recovers() {
    let dv = Dovecot::start();
    dv.deliver("dttm", "1700000000.M1P1.mx", &message(1));
    let env = env_for(&dv, "dttm", "");
    std::fs::write(env.path("imap.pass"), "sai-mat-khau\n").unwrap();
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("IMAP login refused")),
        "{}",
        env.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    // It does not hammer the server with the wrong password.
    assert_eq!(
        env.log().matches("IMAP login refused").count(),
        1,
        "{}",
        env.log()
    );
    assert!(!env.log().contains(PASSWORD) && !env.log().contains("sai-mat-khau"));
    let ready = http_get(env.port, "/readyz").unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.contains(r#""state":"needs_operator""#),
        "{ready}"
    );

    std::fs::write(env.path("imap.pass"), format!("{PASSWORD}\n")).unwrap();
    signal(&child, libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    let ready = http_get(env.port, "/readyz").unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains(r#""status":"ok""#),
        "{ready}"
    );
}

#[test]
fn an_expired_xoauth2_token_waits_for_a_fresh_one_without_a_reload() {
    let dv = Dovecot::start();
    dv.deliver("dttm", "1700000000.M1P1.mx", &message(1));
    let env = Env::new("", "");
    std::fs::remove_file(env.path("channels/mail.toml")).unwrap();
    // Dovecot checks an XOAUTH2 token the way it checks a password: the test password is a
    // valid token, anything else is refused (expired).
    std::fs::write(env.path("token"), "het-han\n").unwrap();
    std::fs::write(
        env.path("channels/dttm.toml"),
        format!(
            "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"dttm\"\noauth2_token_file = \"../token\"\n",
            dv.port
        ),
    )
    .unwrap();
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env
            .log()
            .contains("XOAUTH2 token refused")),
        "{}",
        env.log()
    );
    assert!(http_get(env.port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 503")));
    // The operator's tooling writes a fresh token; no reload is needed.
    std::fs::write(env.path("token"), format!("{PASSWORD}\n")).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    assert!(dv.log().contains("method=XOAUTH2"), "{}", dv.log());
    assert!(!env.log().contains(PASSWORD) && !env.log().contains("het-han"));
    let ready = http_get(env.port, "/readyz").unwrap();
    assert!(ready.contains(r#""state":"running""#), "{ready}");
}

#[test]
fn check_refuses_plain_imap_to_a_remote_host_and_an_inline_password() {
    let env = Env::new("", "");
    std::fs::write(
        env.path("channels/remote.toml"),
        "kind = \"imap\"\nhost = \"mail.example.com\"\ntls = \"none\"\nusername = \"dttm\"\npassword = \"x\"\n",
    )
    .unwrap();
    let out = env.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("remote.toml:5:1: `password` holds a secret inline"),
        "{text}"
    );
}

#[test]
fn starttls_works_and_an_oversized_message_is_not_downloaded() {
    let dv = Dovecot::start();
    dv.deliver("lon", "1700000000.M1P1.mx", &message(1));
    let mut big = message(2);
    big.extend(std::iter::repeat_n(b'x', 300_000));
    dv.deliver("lon", "1700000001.M2P1.mx", &big);
    let env = env_for(&dv, "lon", "");
    std::fs::write(
        env.path("channels/dttm.toml"),
        format!(
            "kind = \"imap\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\nusername = \"lon\"\npassword_file = \"../imap.pass\"\nmax_message_size = \"100KB\"\n",
            dv.port,
            dv.root.join("ca.pem").display()
        ),
    )
    .unwrap();
    let child = env.start();
    let processed = dv.maildir("lon").join(".Processed");
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 1
            && dv.count(&processed) == 2),
        "{}\n{}",
        env.log(),
        dv.log()
    );
    drop(child);
    let list = env.cli_ok(&["quarantine", "list"]);
    assert!(
        list.contains("over max_message_size 100.0 kB: not downloaded"),
        "{list}"
    );
    let head = env.cli(&["quarantine", "show", "1", "--raw"]).stdout;
    assert!(
        head.len() < 2_000 && String::from_utf8_lossy(&head).contains("Message-ID: <report-2@"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

#[test]
fn five_hundred_messages_survive_a_server_restart_mid_drain_stored_once_each() {
    let mut dv = Dovecot::start();
    for n in 0..500 {
        dv.deliver("dttm", &format!("17000{n:05}.M{n}P1.mx"), &message(n));
    }
    let env = env_for(&dv, "dttm", "batch = 20");
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || !env.spool_events().is_empty()),
        "{}",
        env.log()
    );
    dv.restart();
    let at_restart = env.spool_events().len();
    let processed = dv.maildir("dttm").join(".Processed");
    let done = wait_for(Duration::from_secs(90), || {
        env.spool_events().len() == 500 && dv.count(&processed) == 500
    });
    assert!(
        done,
        "spool {} processed {}\n{}",
        env.spool_events().len(),
        dv.count(&processed),
        env.log()
    );
    drop(child);
    // The connection broke under the channel and it came back by itself.
    assert!(
        env.log().contains("Channel failed; restarting."),
        "{}",
        env.log()
    );
    eprintln!("{at_restart} of 500 forwarded when the server was killed");
    let db = env.db();
    let q = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(q("SELECT count(*) FROM reports"), 500);
    assert_eq!(q("SELECT count(DISTINCT external_id) FROM reports"), 500);
    assert_eq!(q("SELECT count(*) FROM inbox"), 500);
}

#[test]
fn a_uidvalidity_change_rescans_without_storing_anything_twice() {
    let mut dv = Dovecot::start();
    for n in 0..3 {
        dv.deliver("dttm", &format!("17000{n:05}.M{n}P1.mx"), &message(n));
    }
    // Flagged, not moved, so the same messages are still there after the renumbering.
    let env = env_for(&dv, "dttm", "after_ingest = \"flag\"");
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 3),
        "{}",
        env.log()
    );
    drop(child);

    // Dovecot renumbers a mailbox whose UID list is lost: a new UIDVALIDITY, new UIDs.
    dv.kill_all();
    for e in std::fs::read_dir(dv.maildir("dttm")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("dovecot")
            && p.is_file()
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    // Dovecot takes the current second as the new UIDVALIDITY: make sure it is a later one.
    std::thread::sleep(Duration::from_millis(1100));
    dv.restart();
    dv.deliver("dttm", "1800000000.M9P1.mx", &message(9));
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 4),
        "{}",
        env.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || env
            .log()
            .contains("UIDVALIDITY changed")),
        "{}",
        env.log()
    );
    drop(child);
    let reports: i64 = env
        .db()
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        reports, 4,
        "the three earlier messages are recognised, not stored again"
    );
}

#[test]
fn backlog_skip_leaves_old_mail_and_takes_new_mail_even_across_a_restart() {
    let dv = Dovecot::start();
    for n in 0..3 {
        dv.deliver("cu", &format!("17000{n:05}.M{n}P1.mx"), &message(n));
    }
    let env = env_for(&dv, "cu", "backlog = \"skip\"");
    let child = env.start();
    // The starting point is saved (not just logged) before the daemon goes down.
    assert!(
        wait_for(Duration::from_secs(20), || env
            .path("state/phananh.db")
            .exists()
            && env
                .db()
                .query_row("SELECT count(*) FROM imap_cursors", [], |r| r
                    .get::<_, i64>(0))
                .unwrap_or(0)
                == 1),
        "{}",
        env.log()
    );
    drop(child);
    // Mail that arrives while the daemon is down is new mail, not backlog.
    dv.deliver("cu", "1800000000.M9P1.mx", &message(9));
    let child = env.start();
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 1),
        "{}",
        env.log()
    );
    drop(child);
    let only: serde_json::Value = env.spool_events().remove(0);
    assert_eq!(only["external_id"], "<report-9@mail.example.com>");
    assert_eq!(
        dv.count(&dv.maildir("cu")),
        3,
        "the backlog stays in the INBOX"
    );
}

#[test]
fn machine_mail_is_stored_but_neither_reported_nor_answered_and_a_citizen_is() {
    let dv = Dovecot::start();
    let sinkdir = tempfile::tempdir().unwrap();
    let sink = super::smtp_sink::SmtpSink::start(sinkdir.path());
    dv.deliver(
        "dttm",
        "1700000001.M1P1.mx",
        &super::ack::mail(
            "ba.tran@example.com",
            "citizen-1",
            "Đường Nguyễn Huệ mất điện từ tối qua.",
            chrono::Duration::zero(),
        ),
    );
    for (n, f) in ["13-auto-reply.eml", "14-bounce.eml", "15-mailing-list.eml"]
        .iter()
        .enumerate()
    {
        dv.deliver(
            "dttm",
            &format!("170000001{n}.M1P1.mx"),
            &std::fs::read(super::common::fixture(f)).unwrap(),
        );
    }
    let env = env_for(&dv, "dttm", &super::ack::ack_channel(&sink, ""));
    let _d = env.start();
    let processed = dv.maildir("dttm").join(".Processed");
    assert!(
        wait_for(Duration::from_secs(30), || dv.count(&processed) == 4),
        "{}",
        env.log()
    );
    let got = sink.wait_for(1, || env.log());
    assert_eq!(got[0].rcpt, "ba.tran@example.com");
    let db = env.db();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM reports"), 1);
    assert_eq!(
        count("SELECT count(*) FROM inbox WHERE automated IS NOT NULL"),
        3
    );
    assert_eq!(
        count("SELECT count(*) FROM acks"),
        1,
        "machines are owed nothing"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn a_message_the_server_cannot_send_is_quarantined_and_the_rest_go_in() {
    let dv = Dovecot::start();
    for n in 0..5 {
        dv.deliver("dttm", &format!("170000000{n}.M{n}P1.mx"), &message(n));
    }
    // The server cannot read this one (a damaged file, a broken store): its FETCH fails.
    let bad = dv.maildir("dttm").join("new/1700000002.M2P1.mx");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o000)).unwrap();
    let env = env_for(&dv, "dttm", "");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(30), || env.spool_events().len() == 4),
        "{}\n{}",
        env.log(),
        dv.log()
    );
    assert!(
        wait_for(Duration::from_secs(20), || {
            env.db()
                .query_row(
                    "SELECT count(*) FROM inbox WHERE status = 'quarantined' AND reason LIKE '%could not fetch%'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                == 1
        }),
        "{}",
        env.log()
    );
    // Past it: new mail still arrives.
    dv.deliver("dttm", "1800000000.M9P1.mx", &message(9));
    assert!(
        wait_for(Duration::from_secs(20), || env.spool_events().len() == 5),
        "{}",
        env.log()
    );
}

#[test]
fn sigkill_between_commit_and_move_stores_each_message_once_and_moves_it_later() {
    let dv = Dovecot::start();
    const N: usize = 1000;
    for n in 0..N {
        dv.deliver("dttm", &format!("17000{n:05}.M{n}P1.mx"), &message(n));
    }
    let env = env_for(&dv, "dttm", "batch = 25");
    let processed = dv.maildir("dttm").join(".Processed");
    let stored = |env: &Env| -> usize {
        if !env.path("state/phananh.db").exists() {
            return 0;
        }
        env.db()
            .query_row("SELECT count(*) FROM inbox", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0) as usize
    };
    let mut mid_drain = 0;
    let mut between = 0;
    // Until two kills landed between a commit and its move (each round moves a batch or two).
    for round in 0..30u64 {
        if between >= 2 {
            break;
        }
        let mut child = env.start();
        let before = stored(&env);
        // Kill once this run has committed something, a little later each round.
        wait_for(Duration::from_secs(20), || {
            stored(&env) > before || dv.count(&processed) == N
        });
        std::thread::sleep(Duration::from_millis(round % 4));
        signal(&child, libc::SIGKILL);
        child.wait().unwrap();
        let (moved, committed) = (dv.count(&processed), stored(&env));
        eprintln!("round {round}: killed with {committed} committed, {moved} moved of {N}");
        mid_drain += usize::from(moved < N);
        between += usize::from(committed > moved);
    }
    assert!(between >= 1, "no kill landed between commit and move");
    assert!(mid_drain >= 1);
    assert!(mid_drain >= 2, "the kills must land mid-drain");
    let _d = env.start();
    assert!(
        wait_for(Duration::from_secs(60), || dv.count(&processed) == N
            && dv.count(&dv.maildir("dttm")) == 0),
        "processed {}\n{}",
        dv.count(&processed),
        env.log()
    );
    let db = env.db();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM inbox"), N as i64);
    assert_eq!(count("SELECT count(*) FROM reports"), N as i64);
    assert_eq!(
        count("SELECT count(DISTINCT external_id) FROM reports"),
        N as i64
    );
}
