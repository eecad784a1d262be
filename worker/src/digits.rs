//! Numbers as text without the formatting machinery: on the request path a
//! `format!` costs more than the number is worth.

/// A decimal number as an owned string.
pub fn itoa(n: u64) -> String {
    ::itoa::Buffer::new().format(n).to_owned()
}
