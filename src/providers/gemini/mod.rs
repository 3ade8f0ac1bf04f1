//! Google's Gemini API. The key goes in `x-goog-api-key`; the model and
//! whether the answer streams are named in the path
//! (`/v1beta/models/{model}:streamGenerateContent`), not the body. Usage:
//! `usageMetadata` in every frame, the last one authoritative.

pub mod translate;

use super::body::RequestInfo;

/// Gemini names the model in the path: `/v1beta/models/{model}:{method}`.
pub fn gemini_path(path: &[u8]) -> Option<RequestInfo> {
    let path = &path[..path.iter().position(|&c| c == b'?').unwrap_or(path.len())];
    let at = memchr::memmem::find(path, b"/models/")? + 8;
    let rest = &path[at..];
    let colon = memchr::memchr(b':', rest)?;
    Some(RequestInfo {
        // Decoded, as the upstream will read it: the key's model scope and
        // the price see the model that is served.
        model: String::from_utf8(crate::http::path::percent_decode(&rest[..colon])).ok(),
        stream: &rest[colon + 1..] == b"streamGenerateContent",
        stream_options: false,
        include_usage: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_model_from_path() {
        let i = gemini_path(b"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
        assert_eq!(
            i,
            Some(RequestInfo { model: Some("gemini-2.5-flash".into()), stream: true, ..RequestInfo::default() })
        );
        let i = gemini_path(b"/v1beta/models/gemini-2.5-pro:generateContent");
        assert_eq!(i.map(|i| i.stream), Some(false));
        assert_eq!(gemini_path(b"/v1/chat/completions"), None);
        // The model as the upstream reads it: percent-decoded, so a key's
        // model scope and the price see the model that is served.
        let i = gemini_path(b"/v1beta/models/gemini%2D2.5-pro:generateContent");
        assert_eq!(i.and_then(|i| i.model).as_deref(), Some("gemini-2.5-pro"));
    }
}
