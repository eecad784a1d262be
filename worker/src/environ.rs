//! The WSGI `environ` dict (PEP 3333): the CGI variables under the rules
//! of `wsgi_fpm::route`, as native strings decoded from bytes as latin-1,
//! plus the `wsgi.*` and `wsgi_fpm.*` keys.
//!
//! Building it is most of what a request costs the worker, so each Python
//! thread keeps an [`EnvCache`]: the key objects (interned) and the last
//! value object of each variable by position — front ends send the same
//! names in the same order, and most values again — and a template of the
//! last request's environ. A request shaped like the previous one is a
//! copy of the template with the changed values set; any other is built
//! from scratch and becomes the template.

use crate::pystr::latin1;
use crate::request::Request;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use wsgi_fpm::proto::cgi::same_bytes;
use wsgi_fpm::proto::{CgiVars, RequestHead};
use wsgi_fpm::route::{self, CgiEnviron, Derived, EnvironRules, NameRule, DEFAULTS};

/// Per-worker values every environ shares.
pub struct Shared {
    pub process_group: String,
    pub multithread: bool,
    pub multiprocess: bool,
}

/// The constant keys and values, made once per thread.
struct Consts {
    version: Py<PyTuple>,
    http: Py<PyString>,
    https: Py<PyString>,
    empty: Py<PyString>,
    get: Py<PyString>,
    process_group: Py<PyString>,
    k_version: Py<PyString>,
    k_scheme: Py<PyString>,
    k_input: Py<PyString>,
    k_errors: Py<PyString>,
    k_multithread: Py<PyString>,
    k_multiprocess: Py<PyString>,
    k_run_once: Py<PyString>,
    k_file_wrapper: Py<PyString>,
    k_terminated: Py<PyString>,
    k_process_group: Py<PyString>,
    k_application_group: Py<PyString>,
    k_request_id: Py<PyString>,
    k_queue_start: Py<PyString>,
    k_request_start: Py<PyString>,
    k_mod_wsgi_queue_start: Py<PyString>,
    k_script_name: Py<PyString>,
    k_path_info: Py<PyString>,
    k_request_method: Py<PyString>,
    defaults: Vec<(Py<PyString>, Py<PyString>)>,
}

fn interned(py: Python<'_>, s: &str) -> Py<PyString> {
    PyString::intern(py, s).unbind()
}

impl Consts {
    fn new(py: Python<'_>, shared: &Shared) -> PyResult<Consts> {
        let mut defaults = Vec::with_capacity(DEFAULTS.len());
        for (name, value) in DEFAULTS {
            defaults.push((intern_bytes(py, name)?, latin1(py, value)?.unbind()));
        }
        Ok(Consts {
            version: PyTuple::new(py, [1, 0])?.unbind(),
            http: interned(py, "http"),
            https: interned(py, "https"),
            empty: interned(py, ""),
            get: interned(py, "GET"),
            process_group: PyString::new(py, &shared.process_group).unbind(),
            k_version: interned(py, "wsgi.version"),
            k_scheme: interned(py, "wsgi.url_scheme"),
            k_input: interned(py, "wsgi.input"),
            k_errors: interned(py, "wsgi.errors"),
            k_multithread: interned(py, "wsgi.multithread"),
            k_multiprocess: interned(py, "wsgi.multiprocess"),
            k_run_once: interned(py, "wsgi.run_once"),
            k_file_wrapper: interned(py, "wsgi.file_wrapper"),
            k_terminated: interned(py, "wsgi.input_terminated"),
            k_process_group: interned(py, "wsgi_fpm.process_group"),
            k_application_group: interned(py, "wsgi_fpm.application_group"),
            k_request_id: interned(py, "wsgi_fpm.request_id"),
            k_queue_start: interned(py, "wsgi_fpm.queue_start"),
            k_request_start: interned(py, "wsgi_fpm.request_start"),
            k_mod_wsgi_queue_start: interned(py, "mod_wsgi.queue_start"),
            k_script_name: interned(py, "SCRIPT_NAME"),
            k_path_info: interned(py, "PATH_INFO"),
            k_request_method: interned(py, "REQUEST_METHOD"),
            defaults,
        })
    }
}

fn intern_bytes(py: Python<'_>, name: &[u8]) -> PyResult<Py<PyString>> {
    match std::str::from_utf8(name) {
        Ok(text) if name.is_ascii() => Ok(PyString::intern(py, text).unbind()),
        _ => Ok(latin1(py, name)?.unbind()),
    }
}

/// One variable position: its name, key object and rule, its last value
/// and that value's object.
struct Slot {
    name: Vec<u8>,
    key: Py<PyString>,
    rule: NameRule,
    value: Vec<u8>,
    obj: Option<Py<PyString>>,
}

/// What the template depends on besides the variables.
#[derive(PartialEq, Eq, Clone)]
struct Shape {
    count: usize,
    https: bool,
    method_to_get: bool,
    missing: [bool; DEFAULTS.len()],
}

struct Template {
    dict: Py<PyDict>,
    shape: Shape,
    script_name: Vec<u8>,
    path_info: Vec<u8>,
    /// Which `wsgi.input` and `wsgi.errors` objects the dict holds (their
    /// addresses: the dict keeps them alive, so no other object has them).
    /// The thread reuses the same two from request to request, so a copy
    /// usually has them already.
    objects: [usize; 2],
}

/// The places of `wsgi.input` and `wsgi.errors` in [`Template::objects`].
pub const INPUT: usize = 0;
pub const ERRORS: usize = 1;

/// An object's identity, as [`Template::objects`] keeps it.
fn identity(obj: &Bound<'_, PyAny>) -> usize {
    obj.as_ptr() as usize
}

/// A Python thread's reusable environ parts.
pub struct EnvCache {
    consts: Consts,
    slots: Vec<Slot>,
    template: Option<Template>,
    /// Keys seen at other positions, so a reordering costs no new object.
    names: std::collections::HashMap<Vec<u8>, Py<PyString>>,
}

/// Values a request may change from the template's and still be a copy
/// of it (past this, building afresh costs about the same).
const CHANGED_MAX: usize = 16;

/// Names remembered beyond their position; past this the map starts over
/// (a peer sending ever new names must not grow the worker).
const MAX_NAMES: usize = 1024;

/// The environ key a variable lands under: the front end's own split goes
/// to `wsgi_fpm.orig_*` (the real `SCRIPT_NAME`/`PATH_INFO` are derived).
fn key_name(name: &[u8]) -> &[u8] {
    match name {
        b"SCRIPT_NAME" => b"wsgi_fpm.orig_script_name",
        b"PATH_INFO" => b"wsgi_fpm.orig_path_info",
        n => n,
    }
}

fn slot_rule(name: &[u8], rules: &EnvironRules) -> NameRule {
    match name {
        b"SCRIPT_NAME" | b"PATH_INFO" => NameRule::Keep,
        n => route::rule(n, rules),
    }
}

impl EnvCache {
    pub fn new(py: Python<'_>, shared: &Shared) -> PyResult<EnvCache> {
        Ok(EnvCache {
            consts: Consts::new(py, shared)?,
            slots: Vec::new(),
            template: None,
            names: std::collections::HashMap::new(),
        })
    }

    fn key_for(&mut self, py: Python<'_>, name: &[u8]) -> PyResult<Py<PyString>> {
        let key_name = key_name(name);
        if let Some(k) = self.names.get(key_name) {
            return Ok(k.clone_ref(py));
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        let k = intern_bytes(py, key_name)?;
        self.names.insert(key_name.to_vec(), k.clone_ref(py));
        Ok(k)
    }

    /// Makes slot `i` describe `name`; true when it already did.
    fn name_slot(
        &mut self,
        py: Python<'_>,
        i: usize,
        name: &[u8],
        rules: &EnvironRules,
    ) -> PyResult<bool> {
        if let Some(slot) = self.slots.get(i) {
            if same_bytes(&slot.name, name) {
                return Ok(true);
            }
        }
        let key = self.key_for(py, name)?;
        let slot = Slot {
            name: name.to_vec(),
            key,
            rule: slot_rule(name, rules),
            value: Vec::new(),
            obj: None,
        };
        if i < self.slots.len() {
            self.slots[i] = slot;
        } else {
            self.slots.push(slot);
        }
        Ok(false)
    }

    /// Builds the environ of one request.
    #[allow(clippy::too_many_arguments)]
    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        shared: &Shared,
        rules: &EnvironRules,
        req: &Request<'_>,
        derived: &Derived<'_>,
        input: Bound<'py, PyAny>,
        errors: Bound<'py, PyAny>,
        file_wrapper: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let head = req.head;
        let vars = &head.vars;
        let shape = Shape {
            count: vars.len(),
            https: derived.https,
            method_to_get: derived.method_to_get,
            missing: derived.missing,
        };
        // Indexed by `INPUT` and `ERRORS`.
        let objects = [&input, &errors];
        let (env, from_template) = match self.copy_template(py, vars, &shape, derived)? {
            Some(env) => (env, true),
            None => match self.build_fresh(
                py,
                shared,
                rules,
                vars,
                &shape,
                derived,
                file_wrapper,
                objects,
            )? {
                Some(env) => (env, true),
                // A header repeats: the reference rules join it.
                None => (
                    plain_cgi(py, &self.consts, shared, head, rules, file_wrapper)?,
                    false,
                ),
            },
        };
        self.put_objects(py, &env, objects, from_template)?;
        self.per_request(py, &env, req)?;
        Ok(env)
    }

    /// Whether the template holds `obj` as its `wsgi.input` (`which` is
    /// [`INPUT`]) or `wsgi.errors` ([`ERRORS`]): one reference to it that
    /// is not the application's (see `crate::reuse`).
    pub fn holds(&self, which: usize, obj: &Bound<'_, PyAny>) -> bool {
        self.template
            .as_ref()
            .is_some_and(|t| t.objects.get(which) == Some(&identity(obj)))
    }

    /// `wsgi.input` and `wsgi.errors` into `env`, where it does not have
    /// them from the template already. When the thread had to make a new
    /// one (the application kept the last), the template takes it too, so
    /// the copies that follow have it again.
    fn put_objects(
        &mut self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        objects: [&Bound<'_, PyAny>; 2],
        from_template: bool,
    ) -> PyResult<()> {
        // In the order of `INPUT` and `ERRORS`, as `objects` is.
        let keys = [&self.consts.k_input, &self.consts.k_errors];
        for (i, (key, obj)) in keys.into_iter().zip(objects).enumerate() {
            let template = self.template.as_mut().filter(|_| from_template);
            if template
                .as_ref()
                .is_some_and(|t| t.objects[i] == identity(obj))
            {
                continue;
            }
            env.set_item(key.bind(py), obj)?;
            if let Some(t) = template {
                t.dict.bind(py).set_item(key.bind(py), obj)?;
                t.objects[i] = identity(obj);
            }
        }
        Ok(())
    }

    /// A copy of the template when this request has the same names in the
    /// same order (and the same derived shape); `None` otherwise.
    fn copy_template<'py>(
        &mut self,
        py: Python<'py>,
        vars: &CgiVars,
        shape: &Shape,
        derived: &Derived<'_>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(template) = &self.template else {
            return Ok(None);
        };
        if template.shape != *shape {
            return Ok(None);
        }
        // One pass: every name must be its slot's; the values that differ
        // from the slot's are noted, to be set on the copy.
        let mut changed: [(usize, &[u8]); CHANGED_MAX] = [(0, b""); CHANGED_MAX];
        let mut n = 0;
        for (i, (slot, (name, value))) in self.slots.iter().zip(vars.iter()).enumerate() {
            if !same_bytes(&slot.name, name) {
                return Ok(None);
            }
            if slot.rule != NameRule::Drop && !same_bytes(&slot.value, value) {
                if n == CHANGED_MAX {
                    return Ok(None);
                }
                changed[n] = (i, value);
                n += 1;
            }
        }
        // The slots hold the values the template was built with (the
        // template itself never changes, so a value that comes back finds
        // it as it was).
        let env = template.dict.bind(py).copy()?;
        for &(i, value) in &changed[..n] {
            env.set_item(self.slots[i].key.bind(py), latin1(py, value)?)?;
        }
        if !same_bytes(&template.script_name, &derived.script_name) {
            env.set_item(
                self.consts.k_script_name.bind(py),
                latin1(py, &derived.script_name)?,
            )?;
        }
        if !same_bytes(&template.path_info, &derived.path_info) {
            env.set_item(
                self.consts.k_path_info.bind(py),
                latin1(py, &derived.path_info)?,
            )?;
        }
        Ok(Some(env))
    }

    #[allow(clippy::too_many_arguments)]
    fn build_fresh<'py>(
        &mut self,
        py: Python<'py>,
        shared: &Shared,
        rules: &EnvironRules,
        vars: &CgiVars,
        shape: &Shape,
        derived: &Derived<'_>,
        file_wrapper: &Bound<'py, PyAny>,
        objects: [&Bound<'py, PyAny>; 2],
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.template = None;
        let env = PyDict::new(py);
        for (i, (name, value)) in vars.iter().enumerate() {
            self.name_slot(py, i, name, rules)?;
            let slot = &mut self.slots[i];
            match slot.rule {
                NameRule::Drop => continue,
                NameRule::Join(_) => {
                    if env.contains(slot.key.bind(py))? {
                        return Ok(None);
                    }
                }
                NameRule::Keep => {}
            }
            let obj = match &slot.obj {
                Some(o) if same_bytes(&slot.value, value) => o.clone_ref(py).into_bound(py),
                _ => {
                    let o = latin1(py, value)?;
                    slot.value.clear();
                    slot.value.extend_from_slice(value);
                    slot.obj = Some(o.clone().unbind());
                    o
                }
            };
            env.set_item(slot.key.bind(py), obj)?;
        }
        self.slots.truncate(vars.len());
        let c = &self.consts;
        for ((key, value), missing) in c.defaults.iter().zip(derived.missing) {
            if missing {
                env.set_item(key.bind(py), value.bind(py))?;
            }
        }
        if derived.method_to_get {
            env.set_item(c.k_request_method.bind(py), c.get.bind(py))?;
        }
        env.set_item(c.k_script_name.bind(py), latin1(py, &derived.script_name)?)?;
        env.set_item(c.k_path_info.bind(py), latin1(py, &derived.path_info)?)?;
        put_constants(py, c, shared, &env, derived.https, file_wrapper)?;
        env.set_item(c.k_input.bind(py), objects[INPUT])?;
        env.set_item(c.k_errors.bind(py), objects[ERRORS])?;
        // The per-request keys are in the template too: on its copy they
        // are replaced, never inserted, so the copy never grows.
        for key in [
            &c.k_request_id,
            &c.k_queue_start,
            &c.k_request_start,
            &c.k_mod_wsgi_queue_start,
        ] {
            env.set_item(key.bind(py), py.None())?;
        }
        self.template = Some(Template {
            dict: env.copy()?.unbind(),
            shape: shape.clone(),
            script_name: derived.script_name.to_vec(),
            path_info: derived.path_info.to_vec(),
            objects: objects.map(identity),
        });
        Ok(Some(env))
    }

    fn per_request<'py>(
        &self,
        py: Python<'py>,
        env: &Bound<'py, PyDict>,
        req: &Request<'_>,
    ) -> PyResult<()> {
        let c = &self.consts;
        env.set_item(c.k_request_id.bind(py), PyString::new(py, req.id_text()))?;
        let queue_start = req.queued_unix.as_secs_f64();
        env.set_item(c.k_queue_start.bind(py), queue_start)?;
        env.set_item(c.k_request_start.bind(py), req.began_unix.as_secs_f64())?;
        // mod_wsgi's key, read by APM agents: integer microseconds as a string.
        let mut digits = itoa::Buffer::new();
        let micros = digits.format(req.queue_start_micros());
        env.set_item(c.k_mod_wsgi_queue_start.bind(py), PyString::new(py, micros))?;
        Ok(())
    }
}

fn put_constants<'py>(
    py: Python<'py>,
    c: &Consts,
    shared: &Shared,
    env: &Bound<'py, PyDict>,
    https: bool,
    file_wrapper: &Bound<'py, PyAny>,
) -> PyResult<()> {
    env.set_item(c.k_version.bind(py), c.version.bind(py))?;
    env.set_item(
        c.k_scheme.bind(py),
        if https {
            c.https.bind(py)
        } else {
            c.http.bind(py)
        },
    )?;
    env.set_item(c.k_multithread.bind(py), shared.multithread)?;
    env.set_item(c.k_multiprocess.bind(py), shared.multiprocess)?;
    env.set_item(c.k_run_once.bind(py), false)?;
    env.set_item(c.k_file_wrapper.bind(py), file_wrapper)?;
    env.set_item(c.k_terminated.bind(py), true)?;
    env.set_item(c.k_process_group.bind(py), c.process_group.bind(py))?;
    env.set_item(c.k_application_group.bind(py), c.empty.bind(py))?;
    Ok(())
}

/// The environ from the reference rules (repeated headers joined).
fn plain_cgi<'py>(
    py: Python<'py>,
    c: &Consts,
    shared: &Shared,
    head: &RequestHead,
    rules: &EnvironRules,
    file_wrapper: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let cgi = route::build(&head.vars, head.role, rules)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let env = PyDict::new(py);
    put_cgi(py, &env, &cgi, &head.vars)?;
    put_constants(py, c, shared, &env, cgi.https, file_wrapper)?;
    Ok(env)
}

fn put_cgi(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    cgi: &CgiEnviron<'_>,
    vars: &CgiVars,
) -> PyResult<()> {
    for (name, value) in &cgi.vars {
        env.set_item(latin1(py, name)?, latin1(py, value)?)?;
    }
    if let Some(orig) = vars.get(b"SCRIPT_NAME") {
        env.set_item("wsgi_fpm.orig_script_name", latin1(py, orig)?)?;
    }
    if let Some(orig) = vars.get(b"PATH_INFO") {
        env.set_item("wsgi_fpm.orig_path_info", latin1(py, orig)?)?;
    }
    Ok(())
}

/// The environ of an auth question: the reference rules, no caching (auth
/// requests are not the hot path).
#[allow(clippy::too_many_arguments)]
pub fn for_auth<'py>(
    py: Python<'py>,
    shared: &Shared,
    cgi: &CgiEnviron<'_>,
    req: &Request<'_>,
    input: Bound<'py, PyAny>,
    errors: Bound<'py, PyAny>,
    file_wrapper: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let vars = &req.head.vars;
    let env = PyDict::new(py);
    put_cgi(py, &env, cgi, vars)?;
    env.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    env.set_item("wsgi.url_scheme", if cgi.https { "https" } else { "http" })?;
    env.set_item("wsgi.input", input)?;
    env.set_item("wsgi.errors", errors)?;
    env.set_item("wsgi.multithread", shared.multithread)?;
    env.set_item("wsgi.multiprocess", shared.multiprocess)?;
    env.set_item("wsgi.run_once", false)?;
    env.set_item("wsgi.file_wrapper", file_wrapper)?;
    env.set_item("wsgi.input_terminated", true)?;
    env.set_item("wsgi_fpm.process_group", shared.process_group.as_str())?;
    env.set_item("wsgi_fpm.application_group", "")?;
    env.set_item("wsgi_fpm.request_id", req.id_text())?;
    env.set_item("wsgi_fpm.queue_start", req.queued_unix.as_secs_f64())?;
    env.set_item("wsgi_fpm.request_start", req.began_unix.as_secs_f64())?;
    env.set_item(
        "mod_wsgi.queue_start",
        crate::digits::itoa(req.queue_start_micros()),
    )?;
    Ok(env)
}
