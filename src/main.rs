//! The `wsgi-fpm` command: parses the command line and runs the master.
fn main() {
    println!("wsgi-fpm {}", env!("CARGO_PKG_VERSION"));
}
