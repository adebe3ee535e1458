//! Durations and sizes as operators write them: `"90s"`, `"15m"`, `"3d"`, `"25MB"`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Parses a humantime duration (`"90s"`, `"72h"`) from a TOML string.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. \"90s\", \"15m\", \"72h\", \"3d\""
        ))
    })
}

/// An optional duration: absent is `None`.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Parses a size (`"25MB"`, `"512KiB"`) from a TOML string.
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid size {s:?} ({e}); write e.g. \"25MB\" or \"512KiB\""
            ))
        })
}

/// Human form of a byte count for messages ("31.5 MB").
pub fn human_size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().si().to_string()
}
