//! A conversation's attachments, downloaded when it closes (minutes after the message: Meta's
//! signed URLs live a day or more) and kept content-addressed like mail attachments. What cannot
//! be fetched is listed in `omitted_media` with the reason, and the report goes ahead without it.

use super::event::Fragment;
use crate::fetch::{FetchError, Fetcher};
use crate::media::MediaStore;
use crate::pipeline::place::PhotoPlace;

use crate::report::{Media, OmittedMedia};
use std::sync::Arc;

/// The kept media, those not kept, and the first photo position found (EXIF).
pub async fn collect(
    fetcher: &Fetcher,
    store: &Arc<MediaStore>,
    channel: &str,
    fragments: &[Fragment],
    tz: chrono_tz::Tz,
) -> std::io::Result<(Vec<Media>, Vec<OmittedMedia>, Option<PhotoPlace>)> {
    let mut media: Vec<Media> = Vec::new();
    let mut omitted = Vec::new();
    let mut place = None;
    for a in fragments.iter().flat_map(|f| &f.attachments) {
        let Some(url) = &a.url else { continue };
        let name = a.title.clone().or_else(|| file_name(url));
        match fetcher.get(url).await {
            Ok(got) => {
                let (m, p) =
                    crate::media::keep(store.clone(), got.bytes, got.content_type, name, tz)
                        .await?;
                place = place.or(p);
                if !media.iter().any(|x| x.sha256 == m.sha256) {
                    media.push(m);
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
    Ok((media, omitted, place))
}

/// The last path segment of a CDN URL (`4711_n.jpg`), as the attachment's name.
fn file_name(url: &str) -> Option<String> {
    let path = reqwest::Url::parse(url).ok()?.path().to_string();
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
