//! `/status` as JSON (SPEC §8): the [`Snapshot`] serialized, plain or with
//! `?full` detail (the module doc of `status` lists which keys each has).
//! Pure: no I/O.

use super::Snapshot;

/// The JSON body of `/status` (`full = false`) or `/status?full`.
pub fn render(snapshot: &Snapshot, full: bool) -> String {
    let result = if full {
        serde_json::to_string(snapshot)
    } else {
        serde_json::to_string(&snapshot.plain())
    };
    // Serializing plain data with string keys cannot fail; if it ever did,
    // the answer is still valid JSON that says so.
    let mut body = result.unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot render the status: {e}") }).to_string()
    });
    body.push('\n');
    body
}

/// Reads a `/status` body back (the `wsgi-fpm status` client does).
pub fn parse(body: &[u8]) -> Result<Snapshot, serde_json::Error> {
    serde_json::from_slice(body)
}
