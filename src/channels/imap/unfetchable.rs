//! A message the server cannot send (a damaged file, a broken store: Dovecot answers the FETCH
//! with an error and hangs up) must not stall the mailbox behind it forever. The first UID of a
//! batch that did not arrive is the suspect; after `STRIKES` failures in a row on the same UID it
//! is quarantined (a note, since there are no bytes) and skipped, and the mail after it flows.
//! One failure is not enough: a dropped connection also ends a FETCH early. After the first
//! strike the suspect is fetched alone, so the next strikes are about that message only.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

pub const STRIKES: u32 = 3;

/// Per channel and mailbox generation: the current suspect and its strikes, and UIDs quarantined.
#[derive(Default)]
struct Memory {
    suspect: Option<(u32, u32)>,
    skipped: Vec<u32>,
}

// Process-wide because the channel's loop restarts on every failure; a restart of the daemon
// forgets it, which costs STRIKES more tries (the quarantine note itself is idempotent).
static MEMORY: LazyLock<Mutex<HashMap<String, Memory>>> = LazyLock::new(Default::default);

pub fn key(channel: &str, mailbox: &str, uidvalidity: u32) -> String {
    format!("{channel}/{mailbox}/{uidvalidity}")
}

/// Records one failure with `uid` as the suspect; returns its strikes so far.
pub fn strike(key: &str, uid: u32) -> u32 {
    let mut m = MEMORY.lock().expect("unfetchable lock");
    let mem = m.entry(key.to_string()).or_default();
    let strikes = match mem.suspect {
        Some((u, n)) if u == uid => n + 1,
        _ => 1,
    };
    mem.suspect = Some((uid, strikes));
    strikes
}

/// The suspect is quarantined: from now on it is passed over.
pub fn skip(key: &str, uid: u32) {
    let mut m = MEMORY.lock().expect("unfetchable lock");
    let mem = m.entry(key.to_string()).or_default();
    mem.suspect = None;
    if !mem.skipped.contains(&uid) {
        mem.skipped.push(uid);
    }
}

/// The suspect came through: no strikes against it.
pub fn cleared(key: &str, uid: u32) {
    let mut m = MEMORY.lock().expect("unfetchable lock");
    if let Some(mem) = m.get_mut(key)
        && mem.suspect.is_some_and(|(u, _)| u == uid)
    {
        mem.suspect = None;
    }
}

/// The UID with strikes against it, if any.
pub fn suspect(key: &str) -> Option<u32> {
    MEMORY
        .lock()
        .expect("unfetchable lock")
        .get(key)
        .and_then(|m| m.suspect.map(|(u, _)| u))
}

/// `uids` (ascending) in batches of `size`, in order, with the suspect in a batch of its own.
pub fn chunks(uids: &[u32], size: usize, suspect: Option<u32>) -> Vec<Vec<u32>> {
    let size = size.max(1);
    let Some(s) = suspect.filter(|s| uids.contains(s)) else {
        return uids.chunks(size).map(<[u32]>::to_vec).collect();
    };
    let (before, after): (Vec<u32>, Vec<u32>) =
        uids.iter().filter(|u| **u != s).partition(|u| **u < s);
    let mut out: Vec<Vec<u32>> = before.chunks(size).map(<[u32]>::to_vec).collect();
    out.push(vec![s]);
    out.extend(after.chunks(size).map(<[u32]>::to_vec));
    out
}

pub fn is_skipped(key: &str, uid: u32) -> bool {
    MEMORY
        .lock()
        .expect("unfetchable lock")
        .get(key)
        .is_some_and(|m| m.skipped.contains(&uid))
}

/// What is kept for a message whose bytes never arrived: where it is, nothing from it.
pub fn note(mailbox: &str, uidvalidity: u32, uid: u32) -> Vec<u8> {
    format!("X-Phananh-Unfetchable: mailbox={mailbox} uidvalidity={uidvalidity} uid={uid}\r\n\r\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_count_only_the_same_suspect_in_a_row() {
        let k = key("t", "INBOX", 1);
        assert_eq!(strike(&k, 5), 1);
        assert_eq!(strike(&k, 5), 2);
        assert_eq!(strike(&k, 7), 1);
        assert_eq!(strike(&k, 7), 2);
        assert_eq!(strike(&k, 7), 3);
        skip(&k, 7);
        assert!(is_skipped(&k, 7) && !is_skipped(&k, 5));
        assert!(!is_skipped(&key("t", "INBOX", 2), 7));
    }

    #[test]
    fn the_suspect_is_fetched_alone_and_order_is_kept() {
        assert_eq!(
            chunks(&[1, 2, 3, 4, 5], 2, None),
            vec![vec![1, 2], vec![3, 4], vec![5]]
        );
        assert_eq!(
            chunks(&[1, 2, 3, 4, 5], 2, Some(3)),
            vec![vec![1, 2], vec![3], vec![4, 5]]
        );
        assert_eq!(chunks(&[1, 2], 2, Some(9)), vec![vec![1, 2]]);
    }
}
