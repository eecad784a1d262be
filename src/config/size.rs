//! Byte sizes with `K`/`M`/`G` suffixes (SPEC §2: `--max-params-size`,
//! "bytes, `K`/`M` suffixes accepted").

/// Parses `1048576`, `512K`, `1M`, `2G` (binary multiples, case-insensitive).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1024),
        Some((i, 'm' | 'M')) => (&text[..i], 1024 * 1024),
        Some((i, 'g' | 'G')) => (&text[..i], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (bytes, or a number with K, M or G)"))?;
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes_and_reject_garbage() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("1m"), Ok(1024 * 1024));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5M").is_err());
    }
}
