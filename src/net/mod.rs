//! The I/O shell around the sans-IO codecs: listening sockets, connection
//! drivers, sendfile. No Python here: requests leave through [`Handler`].

pub mod listen;
