//! Kill -9 at random moments: every message is stored exactly once and forwarded at least once,
//! and no consumer ever sees a half-written spool file.

use super::common::{Env, message, signal, wait_for};
use std::collections::HashSet;
use std::time::Duration;

const MESSAGES: usize = 1_000;
const KILLS: usize = 6;

/// A small deterministic generator: the seed is printed so a failing run can be repeated.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let seed = std::env::var("PHANANH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (PHANANH_CRASH_SEED={seed} repeats it)");
    let mut rng = Lcg(seed);
    let env = Env::new("", "concurrency = 16");
    for n in 0..MESSAGES {
        env.deliver(&format!("17000{n:05}.M{n}P1.mx"), &message(n));
    }

    let mut kills = 0;
    let mut mid_drain = 0;
    for _ in 0..KILLS {
        let mut child = env.start();
        // Kill once intake has begun, at a random point after it.
        let before = env.count(&env.maildir().join("new"), "");
        wait_for(Duration::from_secs(10), || {
            env.count(&env.maildir().join("new"), "") < before || before == 0
        });
        std::thread::sleep(Duration::from_millis(rng.next(120)));
        if child.try_wait().unwrap().is_none() {
            signal(&child, libc::SIGKILL);
            kills += 1;
        }
        child.wait().unwrap();
        let left = env.count(&env.maildir().join("new"), "");
        let spooled = env.count(&env.spool(), ".json");
        eprintln!("killed: {left} left in new/, {spooled} in the spool");
        if left > 0 && left < before {
            mid_drain += 1;
        }
    }
    // The proof is only worth something if kills landed in the middle of the work.
    assert!(
        kills >= KILLS - 1 && mid_drain >= 1,
        "kills {kills}, mid-drain {mid_drain}: tune the timing"
    );

    // A final clean run drains whatever is left.
    let child = env.start();
    let done = wait_for(Duration::from_secs(120), || {
        env.count(&env.maildir().join("new"), "") == 0
            && env.count(&env.spool(), ".json") >= MESSAGES
    });
    assert!(
        done,
        "new/ {} spool {}\n{}",
        env.count(&env.maildir().join("new"), ""),
        env.count(&env.spool(), ".json"),
        env.log()
    );
    // Everything may have been drained by the killed runs: SIGTERM before the handlers are in
    // place would kill it instead of stopping it.
    assert!(wait_for(Duration::from_secs(10), || env
        .log()
        .contains("phananh is running")));
    signal(&child, libc::SIGTERM);
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let db = env.db();
    let q = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        q("SELECT count(*) FROM inbox"),
        MESSAGES as i64,
        "inbox rows"
    );
    assert_eq!(
        q("SELECT count(*) FROM reports"),
        MESSAGES as i64,
        "exactly once"
    );
    assert_eq!(
        q("SELECT count(DISTINCT external_id) FROM reports"),
        MESSAGES as i64
    );
    assert_eq!(
        q("SELECT count(*) FROM reports WHERE duplicate_of IS NOT NULL"),
        0
    );
    assert_eq!(
        q("SELECT count(*) FROM outbox WHERE state != 'delivered'"),
        0
    );

    let expected: HashSet<String> = (0..MESSAGES)
        .map(|n| format!("<report-{n}@mail.example.com>"))
        .collect();
    let mut seen = HashSet::new();
    for entry in std::fs::read_dir(env.spool()).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let event: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("half-written spool file {:?}: {e}", entry.file_name()));
        seen.insert(event["external_id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, expected, "every message forwarded at least once");
    assert_eq!(env.count(&env.maildir().join("cur"), ""), MESSAGES);
}
