//! Apache httpd configuration syntax, read into directives and the sections
//! that hold them. No crate reads Apache's format, so this is a small
//! tokenizer of its own:
//!
//! - a line ending in `\` continues on the next line (the directive keeps
//!   the number of its first line);
//! - a line whose first non-blank character is `#` is a comment (Apache has
//!   no comments after a directive);
//! - arguments are separated by blanks; `"…"` and `'…'` quote at the start
//!   of an argument or right after a `=`, so that mod_wsgi's
//!   `display-name='%{GROUP}'` and `python-path="/a b"` come out as one
//!   argument without the quotes; a backslash escapes the quote character
//!   and itself inside quotes;
//! - `<Name args>` opens a section and `</Name>` closes it; every
//!   directive knows its innermost section, and every section its parent.
//!
//! `Include` and `IncludeOptional` are followed when the file exists, the
//! path taken relative to the including file's directory (for Debian's
//! `/etc/apache2/apache2.conf` that is the ServerRoot too); `*` and `?` in
//! the last path component are expanded. An include that names nothing is
//! kept as a directive for the caller to report. Nothing here knows what a
//! directive means; [`super::mod_wsgi`] does.

use super::Error;
use std::path::{Path, PathBuf};

/// How deep `Include` may nest: a loop of includes stops here.
const MAX_INCLUDE_DEPTH: usize = 16;

/// One directive: its name as written and its arguments, unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The file it is in, as an index into [`Conf::files`].
    pub file: usize,
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
    /// Its innermost section, an index into [`Conf::sections`].
    pub section: Option<usize>,
}

impl Directive {
    /// The name in lower case: Apache's directive names ignore case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A `<Name args>` … `</Name>` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub file: usize,
    pub line: usize,
    /// As written (`VirtualHost`); compare with [`Section::is`].
    pub name: String,
    pub args: Vec<String>,
    pub parent: Option<usize>,
}

impl Section {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A whole configuration with its included files.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    /// File names as shown in reports: the source as given, included files
    /// as resolved.
    pub files: Vec<String>,
    pub directives: Vec<Directive>,
    pub sections: Vec<Section>,
}

impl Conf {
    /// Reads `text`, the content of `source`.
    pub fn parse(source: &Path, text: &str) -> Result<Conf, Error> {
        let mut conf = Conf::default();
        let mut visited = Vec::new();
        if let Ok(canonical) = std::fs::canonicalize(source) {
            visited.push(canonical);
        }
        conf.read(source, text, None, 0, &mut visited)?;
        Ok(conf)
    }

    pub fn file(&self, d: &Directive) -> &str {
        self.files.get(d.file).map(String::as_str).unwrap_or("?")
    }

    /// The sections around `d`, innermost first.
    pub fn ancestors(&self, mut section: Option<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(i) = section {
            // A section's parent always comes before it: no loop possible,
            // but stay bounded anyway.
            if out.len() > self.sections.len() {
                break;
            }
            out.push(i);
            section = self.sections.get(i).and_then(|s| s.parent);
        }
        out
    }

    /// The `<VirtualHost>` that holds `section`, if any.
    pub fn vhost_of(&self, section: Option<usize>) -> Option<usize> {
        self.ancestors(section)
            .into_iter()
            .find(|&i| self.sections[i].is("VirtualHost"))
    }

    fn read(
        &mut self,
        path: &Path,
        text: &str,
        outer: Option<usize>,
        depth: usize,
        visited: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        let file = self.files.len();
        let label = path.display().to_string();
        self.files.push(label.clone());
        let mut stack: Vec<usize> = Vec::new();
        for (line, logical) in logical_lines(text) {
            let trimmed = logical.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let current = stack.last().copied().or(outer);
            if let Some(rest) = trimmed.strip_prefix("</") {
                let name = rest.trim_end_matches('>').trim();
                let Some(open) = stack.pop() else {
                    return Err(Error(format!(
                        "{label}:{line}: </{name}> closes a section that was never opened"
                    )));
                };
                let opened = &self.sections[open];
                if !opened.name.eq_ignore_ascii_case(name) {
                    return Err(Error(format!(
                        "{label}:{line}: </{name}> does not close <{}> opened at line {}",
                        opened.name, opened.line
                    )));
                }
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('<') {
                let Some(inner) = rest.strip_suffix('>') else {
                    return Err(Error(format!(
                        "{label}:{line}: a section line must end with `>`: {trimmed}"
                    )));
                };
                let words = words(inner).map_err(|e| Error(format!("{label}:{line}: {e}")))?;
                let Some((name, args)) = words.split_first() else {
                    return Err(Error(format!("{label}:{line}: an empty section `<>`")));
                };
                self.sections.push(Section {
                    file,
                    line,
                    name: name.clone(),
                    args: args.to_vec(),
                    parent: current,
                });
                stack.push(self.sections.len() - 1);
                continue;
            }
            let words = words(trimmed).map_err(|e| Error(format!("{label}:{line}: {e}")))?;
            let Some((name, args)) = words.split_first() else {
                continue;
            };
            let directive = Directive {
                file,
                line,
                name: name.clone(),
                args: args.to_vec(),
                section: current,
            };
            let is_include = directive.is("Include") || directive.is("IncludeOptional");
            if is_include && depth < MAX_INCLUDE_DEPTH {
                let found = args
                    .first()
                    .map(|pattern| expand_include(path, pattern))
                    .unwrap_or_default();
                if !found.is_empty() {
                    for included in found {
                        let canonical =
                            std::fs::canonicalize(&included).unwrap_or(included.clone());
                        if visited.contains(&canonical) {
                            continue;
                        }
                        visited.push(canonical);
                        let bytes = std::fs::read(&included).map_err(|e| {
                            Error(format!(
                                "{label}:{line}: Include {}: cannot read: {e}",
                                included.display()
                            ))
                        })?;
                        let text = String::from_utf8(bytes).map_err(|_| {
                            Error(format!(
                                "{label}:{line}: Include {}: not UTF-8 text",
                                included.display()
                            ))
                        })?;
                        self.read(&included, &text, current, depth + 1, visited)?;
                    }
                    continue;
                }
            }
            self.directives.push(directive);
        }
        if let Some(open) = stack.pop() {
            let s = &self.sections[open];
            return Err(Error(format!(
                "{label}:{}: <{}> is never closed",
                s.line, s.name
            )));
        }
        Ok(())
    }
}

/// The files an `Include` names, relative to the including file's
/// directory; `*` and `?` are expanded in the last component only.
fn expand_include(from: &Path, pattern: &str) -> Vec<PathBuf> {
    let base = from.parent().unwrap_or(Path::new("."));
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if full.is_file() {
            vec![full]
        } else {
            Vec::new()
        };
    }
    let dir = full.parent().unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

/// `*` and `?` as a shell matches them in one path component.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point: linear-ish, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Joins continuation lines: `(number of the first line, text)`.
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        let trimmed = raw.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(raw);
            out.push((start, acc));
        }
    }
    if let Some(last) = pending {
        out.push(last);
    }
    out
}

/// Splits one logical line into arguments (see the module docs).
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            // A quote opens at the start of an argument (Apache's rule) or
            // right after `=` (mod_wsgi's `name='value'`); elsewhere it is
            // an ordinary character (`o'brien`).
            '"' | '\'' if !in_word || word.ends_with('=') => {
                in_word = true;
                let quote = c;
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == quote {
                        closed = true;
                        break;
                    }
                    if q == '\\' {
                        match chars.next() {
                            Some(e) if e == quote || e == '\\' => word.push(e),
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => word.push('\\'),
                        }
                        continue;
                    }
                    word.push(q);
                }
                if !closed {
                    return Err(format!("unterminated {quote} quote in: {}", line.trim()));
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// `name=value` options (mod_wsgi's), split at the first `=`.
pub fn option(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (arg, None),
    }
}
