//! The front-end lines the sources share: how nginx and Apache httpd pass a
//! location to a wsgi-fpm listener, in the forms `conf/nginx/*.conf` and
//! `conf/apache/*.conf` use (the end-to-end tests run those). This module
//! only formats text; which locations exist is each source's business.

use super::Addr;

/// The protocols of wsgi-fpm's listeners, as listen URLs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    FastCgi,
    Scgi,
    Uwsgi,
    Http,
}

impl Proto {
    /// The listen URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Proto::FastCgi => "fastcgi",
            Proto::Scgi => "scgi",
            Proto::Uwsgi => "uwsgi",
            Proto::Http => "http",
        }
    }
}

/// `PROTOCOL://ADDR`, a wsgi-fpm listen URL.
pub fn listen_url(proto: Proto, addr: &Addr) -> String {
    format!("{}://{}", proto.scheme(), addr.listen())
}

/// The body of an nginx location that passes requests to `addr`: the stock
/// params file and the `*_pass` line (wsgi-fpm recomputes `SCRIPT_NAME` and
/// `PATH_INFO`, so nothing else is needed).
pub fn nginx_pass(proto: Proto, addr: &Addr, indent: &str) -> String {
    nginx_pass_with(proto, addr, indent, &[])
}

/// As [`nginx_pass`], with `params` lines after the params file (a later
/// param wins in wsgi-fpm, so these override the stock ones).
pub fn nginx_pass_with(proto: Proto, addr: &Addr, indent: &str, params: &[String]) -> String {
    let target = match addr {
        Addr::Tcp(h, p) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{p}"),
        Addr::Tcp(h, p) => format!("{h}:{p}"),
        Addr::Unix(path) => format!("unix:{path}"),
    };
    let (include, pass) = match proto {
        Proto::FastCgi => ("include /etc/nginx/fastcgi_params;", "fastcgi_pass"),
        Proto::Scgi => ("include /etc/nginx/scgi_params;", "scgi_pass"),
        Proto::Uwsgi => ("include /etc/nginx/uwsgi_params;", "uwsgi_pass"),
        Proto::Http => {
            return format!(
                "{indent}proxy_set_header Host $host;\n{indent}proxy_pass http://{target};\n"
            )
        }
    };
    let mut out = format!("{indent}{include}\n");
    for p in params {
        out.push_str(&format!("{indent}{p}\n"));
    }
    out.push_str(&format!("{indent}{pass} {target};\n"));
    out
}

/// nginx locations for an application mounted at `mount` ("" or "/" for
/// the root): `location /app/` plus `location = /app`, so that `/app`
/// itself reaches the application as it did, and `/appx` does not.
pub fn nginx_locations(mount: &str, proto: Proto, addr: &Addr, indent: &str) -> String {
    nginx_locations_with(mount, proto, addr, indent, &[], &[])
}

/// As [`nginx_locations`], with `first` lines at the top of each location
/// (e.g. `auth_request`) and `params` after the params file.
pub fn nginx_locations_with(
    mount: &str,
    proto: Proto,
    addr: &Addr,
    indent: &str,
    first: &[String],
    params: &[String],
) -> String {
    let inner = format!("{indent}    ");
    let mut body: String = first.iter().map(|l| format!("{inner}{l}\n")).collect();
    body.push_str(&nginx_pass_with(proto, addr, &inner, params));
    let mount = mount.trim_end_matches('/');
    if mount.is_empty() {
        return format!("{indent}location / {{\n{body}{indent}}}\n");
    }
    format!(
        "{indent}location {mount}/ {{\n{body}{indent}}}\n{indent}location = {mount} {{\n{body}{indent}}}\n"
    )
}

/// The URL of Apache's `ProxyPass` for `addr`, with the path `mount`:
/// `fcgi://HOST:PORT/mount` or `unix:/path.sock|fcgi://localhost/mount`.
pub fn apache_url(proto: Proto, addr: &Addr, mount: &str) -> String {
    let scheme = match proto {
        Proto::FastCgi => "fcgi",
        Proto::Scgi => "scgi",
        Proto::Uwsgi => "uwsgi",
        Proto::Http => "http",
    };
    let path = if mount.is_empty() { "/" } else { mount };
    match addr {
        Addr::Tcp(h, p) if h.contains(':') && !h.starts_with('[') => {
            format!("{scheme}://[{h}]:{p}{path}")
        }
        Addr::Tcp(h, p) => format!("{scheme}://{h}:{p}{path}"),
        Addr::Unix(sock) => format!("unix:{sock}|{scheme}://localhost{path}"),
    }
}

/// Apache's `ProxyPass` line for an application at `mount` ("" for the
/// root). FastCGI gets `flushpackets=auto`: mod_proxy_fcgi holds small
/// streamed pieces back otherwise.
pub fn apache_proxy_pass(mount: &str, proto: Proto, addr: &Addr, indent: &str) -> String {
    let mount = mount.trim_end_matches('/');
    let url = apache_url(proto, addr, if mount.is_empty() { "/" } else { mount });
    let from = if mount.is_empty() { "/" } else { mount };
    let flush = if proto == Proto::FastCgi {
        " flushpackets=auto"
    } else {
        ""
    };
    format!(
        "{indent}ProxyPass {} {}{flush}\n",
        apache_quote(from),
        apache_quote(&url)
    )
}

/// An Apache argument in double quotes (`"` and `\` escaped).
pub fn apache_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Apache modules a front-end snippet needs, as a comment line.
pub fn apache_modules_comment(mods: &[&str]) -> String {
    format!("# Apache modules: a2enmod {}\n", mods.join(" "))
}

/// A value for an nginx directive: quoted when it has anything but plain
/// characters.
pub fn nginx_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:*[]".contains(c))
    {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
