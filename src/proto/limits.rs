//! Limits on everything a peer controls. Each has a sane default and is
//! configurable (SPEC §2 "Default limits (each configurable)").

/// Bounds the decoders enforce before they allocate or hand anything on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of one request's parameter block as it arrives (names,
    /// values, their length prefixes and, for FastCGI, the header of each
    /// record after the first: a block trickled in 1-byte records costs
    /// nine times its size). SPEC §2: 1 MiB by default
    /// (`--max-params-size`).
    pub max_params_bytes: usize,
    /// Number of name/value pairs in one request. Real requests carry 20–60;
    /// the bound stops a block of millions of empty pairs from costing a
    /// vector entry each. Follows `--max-params-size` (one pair per 8 bytes:
    /// 131,072 at the 1 MiB default; see [`Limits::params_count_for`]).
    pub max_params_count: usize,
    /// FastCGI: the parameter blocks of every request still arriving on one
    /// connection, together (`--max-connection-params-size`), so that many
    /// live request ids cannot each hold a block just under the limit.
    pub max_connection_params_bytes: usize,
    /// FastCGI: concurrent request ids on one connection (multiplexing); a
    /// new id beyond it gets `FCGI_CANT_MPX_CONN`
    /// (`--max-requests-per-connection`). `FCGI_GET_VALUES` answers from
    /// `fastcgi::Settings`, which describes the whole process.
    pub max_requests_per_conn: usize,
}

impl Limits {
    /// SPEC §2 default for the parameter block.
    pub const DEFAULT_MAX_PARAMS_BYTES: usize = 1024 * 1024;
    /// One pair per 8 bytes of [`Limits::DEFAULT_MAX_PARAMS_BYTES`].
    pub const DEFAULT_MAX_PARAMS_COUNT: usize = Self::DEFAULT_MAX_PARAMS_BYTES / 8;

    /// The pair count that goes with a params size: one pair per 8 bytes,
    /// so the index of a block (16 bytes a pair) stays within twice the
    /// block's own size.
    pub fn params_count_for(max_params_bytes: usize) -> usize {
        (max_params_bytes / 8).max(64)
    }
    pub const DEFAULT_MAX_CONNECTION_PARAMS_BYTES: usize = 4 * 1024 * 1024;
    pub const DEFAULT_MAX_REQUESTS_PER_CONN: usize = 16;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_params_bytes: Self::DEFAULT_MAX_PARAMS_BYTES,
            max_params_count: Self::DEFAULT_MAX_PARAMS_COUNT,
            max_connection_params_bytes: Self::DEFAULT_MAX_CONNECTION_PARAMS_BYTES,
            max_requests_per_conn: Self::DEFAULT_MAX_REQUESTS_PER_CONN,
        }
    }
}
