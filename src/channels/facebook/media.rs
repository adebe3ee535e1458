//! A conversation's attachments, downloaded when it closes (minutes after the message: Meta's
//! signed URLs live a day or more) and kept content-addressed like mail attachments. What cannot
//! be fetched is listed in `omitted_media` with the reason, and the report goes ahead without it.

use super::event::Fragment;
use crate::fetch::{FetchError, Fetcher};
use crate::media::MediaStore;
use crate::pipeline::{Blob, sha256_hex};
use crate::report::{Media, OmittedMedia};
use std::sync::Arc;

pub async fn collect(
    fetcher: &Fetcher,
    store: &Arc<MediaStore>,
    channel: &str,
    fragments: &[Fragment],
) -> std::io::Result<(Vec<Media>, Vec<OmittedMedia>)> {
    let mut media: Vec<Media> = Vec::new();
    let mut omitted = Vec::new();
    for a in fragments.iter().flat_map(|f| &f.attachments) {
        let Some(url) = &a.url else { continue };
        let name = a.title.clone().or_else(|| file_name(url));
        match fetcher.get(url).await {
            Ok(got) => {
                let content_type = infer::get(&got.bytes)
                    .map(|t| t.mime_type().to_string())
                    .or(got.content_type)
                    .unwrap_or_else(|| "application/octet-stream".into());
                let blob = Blob {
                    sha256: sha256_hex(&got.bytes),
                    bytes: got.bytes,
                };
                let s = store.clone();
                let kept = blob.clone();
                tokio::task::spawn_blocking(move || s.put(&kept))
                    .await
                    .map_err(std::io::Error::other)??;
                if !media.iter().any(|m| m.sha256 == blob.sha256) {
                    media.push(Media {
                        sha256: blob.sha256,
                        content_type,
                        size: blob.bytes.len() as u64,
                        name,
                        phash: None,
                    });
                }
            }
            Err(e) => {
                let reason = match &e {
                    FetchError::NotAllowed(_) => "not_allowed",
                    FetchError::TooLarge(_) => "too_large",
                    FetchError::Unavailable(_) => "unavailable",
                };
                tracing::warn!(channel = %channel, kind = %a.kind, error = %e, "Attachment not kept.");
                omitted.push(OmittedMedia {
                    name,
                    content_type: "application/octet-stream".into(),
                    size: match e {
                        FetchError::TooLarge(n) => n,
                        _ => 0,
                    },
                    reason: reason.into(),
                });
            }
        }
    }
    Ok((media, omitted))
}

/// The last path segment of a CDN URL (`4711_n.jpg`), as the attachment's name.
fn file_name(url: &str) -> Option<String> {
    let path = reqwest::Url::parse(url).ok()?.path().to_string();
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
