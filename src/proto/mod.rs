//! Sans-IO protocol codecs: bytes in, events out; responses in, bytes out.
//!
//! Nothing here opens a socket, reads a clock, touches Python or logs above
//! `trace`. The connection layer (`net`) owns the sockets and feeds bytes in.
//! Every protocol produces the same [`cgi::RequestHead`], so the layers above
//! never learn which protocol carried a request.

pub mod cgi;
pub mod fastcgi;
#[doc(hidden)]
pub mod fuzz;
pub mod limits;
pub mod scgi;
pub mod session;
pub mod stream;
pub mod uwsgi;

pub use cgi::{BodyFraming, CgiVars, RequestHead, ResponseHead, Role};
pub use limits::Limits;
pub use stream::{Phase, StreamEvent};
