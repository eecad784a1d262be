//! Numbers as text without the formatting machinery: on the request path a
//! `format!` costs more than the number is worth.

/// A decimal number as text in `buf`, without the formatting machinery.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// [`decimal`], owned.
pub fn itoa(n: u64) -> String {
    decimal(n, &mut [0u8; 20]).to_owned()
}
