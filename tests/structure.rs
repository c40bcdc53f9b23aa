//! The shape `ARCHITECTURE.md` promises, kept true on the syntax tree (the
//! sources are parsed with `syn`, not matched line by line): imports follow
//! the data flow, the modules of `src/` import each other without a cycle,
//! and no function outside tests and the simulator is longer than a person
//! reads in one sitting (100 lines).
//!
//! Each rule is a checker, a function over a module path and a parsed file
//! (or, for cycles, all of them) that returns the violations. The tests on
//! the real tree and the tests on small breaking sources (`breaking::*`,
//! in-memory files under fake paths) call the same checkers.
//!
//! What a file refers to: every `use` tree (groups, nested groups, `self`,
//! renames, globs) and every path of two or more segments in code (types,
//! expressions, patterns, macro paths, and `a::b` chains inside macro
//! bodies such as `tokio::select!`, which `syn` leaves unparsed). A path is
//! resolved to the module of the library it names: `crate::`, `$crate::`
//! and `carat_catalogd::` from the root, `super::` (repeated) from the
//! enclosing module (inline `mod`s included), `self::` from it, a name
//! imported by a `use` of the same module through that `use`, a child
//! module by its `mod` declaration; anything else is another crate or a
//! local item. `crate::`/`super::`/`self::` in `main.rs` and `bin/` name
//! the binary, not the library. Attributes (doc comments included) and
//! visibilities (`pub(crate)`) are not references. Items under
//! `#[cfg(test)]` (or a `cfg` that implies `test`) and `#[test]` functions
//! are skipped; everything else is checked, code after a test module too.
//!
//! Cycles: the nodes are the files' modules (`api::feed` and `api::routes`
//! are two; `events` and `state` are two; `crate` is `lib.rs`, `main` and
//! `bin::carat-sim` the binaries). A reference is charged to the module
//! that *defines* the item: a path through a `use` (a re-export, `pub` or
//! not, or a glob) is followed to where the item is defined. So a child's
//! reference to its parent's re-export counts as a reference to the module
//! the parent re-exports from: `routes` naming `super::LongPoll` that
//! `api/mod.rs` re-exports from `feed` is an edge `api::routes →
//! api::feed`, and a re-export cannot hide a cycle. A child's reference to
//! an item its parent (or any ancestor) itself defines is not an edge: a
//! child lives in its parent's namespace, and what `mod.rs` defines (`Api`)
//! is the vocabulary its children share; counting it would make every
//! `mod.rs` that calls into a child a cycle. A parent's reference to its
//! child is an edge like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::{self, Visit};

// ---------------------------------------------------------------- sources

/// Where a file sits: its path under `src/` (for messages), its crate and
/// its module path in that crate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Module {
    rel: String,
    /// `None`: the library. `Some(name)`: a binary (`main.rs`, `bin/*.rs`).
    bin: Option<String>,
    /// `["api", "feed"]` for `api/feed.rs`; `[]` for a crate root.
    path: Vec<String>,
}

impl Module {
    fn of(rel: &str) -> Module {
        let rel = rel.trim_start_matches("src/").to_owned();
        let stem = rel.trim_end_matches(".rs");
        if stem == "main" {
            return Module {
                bin: Some("main".into()),
                path: vec![],
                rel,
            };
        }
        if let Some(b) = stem.strip_prefix("bin/") {
            return Module {
                bin: Some(format!("bin::{b}")),
                path: vec![],
                rel,
            };
        }
        let mut path: Vec<String> = stem.split('/').map(str::to_owned).collect();
        if path.last().is_some_and(|l| l == "mod" || l == "lib") {
            path.pop();
        }
        Module { bin: None, path, rel }
    }

    /// The node of the import graph: `api::feed`, `crate`, `main`.
    fn node(&self) -> String {
        match &self.bin {
            Some(b) => b.clone(),
            None => node_name(&self.path),
        }
    }

    /// The top-level module of the library this file belongs to (`""` for
    /// `lib.rs` and the binaries).
    fn top(&self) -> &str {
        match (&self.bin, self.path.first()) {
            (None, Some(t)) => t,
            _ => "",
        }
    }
}

fn node_name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every file of `src/`, parsed.
fn tree() -> Vec<(Module, syn::File)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    sources(&src)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            (Module::of(&rel), file)
        })
        .collect()
}

// ------------------------------------------------------------- the walk

/// A path as written, where it was written.
#[derive(Debug, Clone)]
struct RawRef {
    /// The module it is written in (inline `mod`s included).
    scope: Vec<String>,
    segs: Vec<String>,
    glob: bool,
    line: usize,
}

impl RawRef {
    fn text(&self) -> String {
        let mut t = self.segs.join("::");
        if self.glob {
            t.push_str("::*");
        }
        t
    }
}

/// A function's body as the length rule measures it.
#[derive(Debug)]
struct FnSpan {
    name: String,
    start: usize,
    end: usize,
}

/// What one file declares and names, outside test items.
#[derive(Debug, Default)]
struct Walk {
    module: Option<Module>,
    scope: Vec<String>,
    /// Inside a function body: items there are not the module's.
    blocks: usize,
    /// `(scope, name)` → the path a `use` gives that name.
    uses: BTreeMap<(Vec<String>, String), Vec<String>>,
    /// `(scope, source)` of every glob `use`.
    globs: Vec<(Vec<String>, Vec<String>)>,
    /// Modules declared here (`mod x;` and inline), by full path.
    children: BTreeSet<Vec<String>>,
    /// Names of items defined at module level, by scope.
    defined: BTreeMap<Vec<String>, BTreeSet<String>>,
    refs: Vec<RawRef>,
    fns: Vec<FnSpan>,
}

fn line(s: Span) -> usize {
    s.start().line
}

/// Does the `cfg` predicate hold only under `test`?
fn cfg_implies_test(m: &syn::Meta) -> bool {
    type Metas = syn::punctuated::Punctuated<syn::Meta, syn::Token![,]>;
    match m {
        syn::Meta::Path(p) => p.is_ident("test"),
        syn::Meta::List(l) => {
            let Ok(args) = l.parse_args_with(Metas::parse_terminated) else {
                return false;
            };
            if l.path.is_ident("all") {
                args.iter().any(cfg_implies_test)
            } else if l.path.is_ident("any") {
                !args.is_empty() && args.iter().all(cfg_implies_test)
            } else {
                false
            }
        }
        syn::Meta::NameValue(_) => false,
    }
}

/// `#[cfg(test)]` (or a `cfg` implying it), `#[test]`, `#[tokio::test]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if a.path().is_ident("cfg") {
            a.parse_args::<syn::Meta>().is_ok_and(|m| cfg_implies_test(&m))
        } else {
            a.path().segments.last().is_some_and(|s| s.ident == "test")
        }
    })
}

fn item_attrs(i: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match i {
        Const(x) => &x.attrs,
        Enum(x) => &x.attrs,
        ExternCrate(x) => &x.attrs,
        Fn(x) => &x.attrs,
        ForeignMod(x) => &x.attrs,
        Impl(x) => &x.attrs,
        Macro(x) => &x.attrs,
        Mod(x) => &x.attrs,
        Static(x) => &x.attrs,
        Struct(x) => &x.attrs,
        Trait(x) => &x.attrs,
        TraitAlias(x) => &x.attrs,
        Type(x) => &x.attrs,
        Union(x) => &x.attrs,
        Use(x) => &x.attrs,
        _ => &[],
    }
}

fn item_name(i: &syn::Item) -> Option<String> {
    use syn::Item::*;
    let id = match i {
        Const(x) => &x.ident,
        Enum(x) => &x.ident,
        Fn(x) => &x.sig.ident,
        Macro(x) => x.ident.as_ref()?,
        Mod(x) => &x.ident,
        Static(x) => &x.ident,
        Struct(x) => &x.ident,
        Trait(x) => &x.ident,
        TraitAlias(x) => &x.ident,
        Type(x) => &x.ident,
        Union(x) => &x.ident,
        _ => return None,
    };
    Some(id.to_string())
}

impl Walk {
    fn of(module: &Module, file: &syn::File) -> Walk {
        let mut w = Walk {
            module: Some(module.clone()),
            scope: module.path.clone(),
            ..Walk::default()
        };
        w.visit_file(file);
        w
    }

    fn push(&mut self, segs: Vec<String>, glob: bool, line: usize) {
        self.refs.push(RawRef {
            scope: self.scope.clone(),
            segs,
            glob,
            line,
        });
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, t: &syn::UseTree) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, &n.ident, &n.ident),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, &r.ident, &r.rename),
            syn::UseTree::Glob(g) => {
                self.globs.push((self.scope.clone(), prefix.clone()));
                self.push(prefix.clone(), true, line(g.star_token.span));
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], ident: &syn::Ident, alias: &syn::Ident) {
        let mut full = prefix.to_vec();
        if ident != "self" {
            full.push(ident.to_string());
        }
        let name = if alias == "self" {
            prefix.last().cloned().unwrap_or_default()
        } else {
            alias.to_string()
        };
        if name != "_" {
            self.uses.insert((self.scope.clone(), name), full.clone());
        }
        self.push(full, false, line(ident.span()));
    }

    fn function(&mut self, name: &syn::Ident, attrs: &[syn::Attribute], head: Span, block: &syn::Block) {
        let code_attr = attrs
            .iter()
            .filter(|a| !a.path().is_ident("doc"))
            .map(|a| line(a.pound_token.span))
            .min();
        let start = code_attr.map_or(line(head), |a| a.min(line(head)));
        let end = block.brace_token.span.close().end().line;
        self.fns.push(FnSpan {
            name: name.to_string(),
            start,
            end,
        });
    }

    /// `a::b` chains inside a macro's tokens (`$crate::x` included).
    fn scan(&mut self, ts: TokenStream) {
        let toks: Vec<TokenTree> = ts.into_iter().collect();
        let is_colons = |i: usize| {
            matches!((toks.get(i), toks.get(i + 1)),
                (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
        };
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                TokenTree::Group(g) => {
                    self.scan(g.stream());
                    i += 1;
                }
                TokenTree::Ident(id) => {
                    let after_colons = i >= 2 && is_colons(i - 2);
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    while is_colons(j) {
                        match toks.get(j + 2) {
                            Some(TokenTree::Ident(n)) => {
                                segs.push(n.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if !after_colons && segs.len() > 1 {
                        self.push(segs, false, line(id.span()));
                    }
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
}

impl<'ast> Visit<'ast> for Walk {
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item(&mut self, i: &'ast syn::Item) {
        if is_test(item_attrs(i)) {
            return;
        }
        if self.blocks == 0
            && let Some(name) = item_name(i)
        {
            self.defined.entry(self.scope.clone()).or_default().insert(name);
        }
        match i {
            syn::Item::Use(u) => {
                // `use ::x` names another crate.
                if u.leading_colon.is_none() {
                    self.use_tree(&mut vec![], &u.tree);
                }
            }
            syn::Item::Mod(m) => {
                let mut path = self.scope.clone();
                path.push(m.ident.to_string());
                self.children.insert(path.clone());
                if let Some((_, items)) = &m.content {
                    let outer = std::mem::replace(&mut self.scope, path);
                    let blocks = std::mem::take(&mut self.blocks);
                    for i in items {
                        self.visit_item(i);
                    }
                    self.scope = outer;
                    self.blocks = blocks;
                }
            }
            _ => visit::visit_item(self, i),
        }
    }

    fn visit_impl_item(&mut self, i: &'ast syn::ImplItem) {
        let attrs = match i {
            syn::ImplItem::Const(x) => &x.attrs,
            syn::ImplItem::Fn(x) => &x.attrs,
            syn::ImplItem::Type(x) => &x.attrs,
            syn::ImplItem::Macro(x) => &x.attrs,
            _ => return visit::visit_impl_item(self, i),
        };
        if !is_test(attrs) {
            visit::visit_impl_item(self, i);
        }
    }

    fn visit_trait_item(&mut self, i: &'ast syn::TraitItem) {
        let attrs = match i {
            syn::TraitItem::Const(x) => &x.attrs,
            syn::TraitItem::Fn(x) => &x.attrs,
            syn::TraitItem::Type(x) => &x.attrs,
            syn::TraitItem::Macro(x) => &x.attrs,
            _ => return visit::visit_trait_item(self, i),
        };
        if !is_test(attrs) {
            visit::visit_trait_item(self, i);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let head = match &f.vis {
            syn::Visibility::Inherited => f.sig.span(),
            v => v.span(),
        };
        self.function(&f.sig.ident, &f.attrs, head, &f.block);
        visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let head = match (&f.defaultness, &f.vis) {
            (Some(d), _) => d.span,
            (None, syn::Visibility::Inherited) => f.sig.span(),
            (None, v) => v.span(),
        };
        self.function(&f.sig.ident, &f.attrs, head, &f.block);
        visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.sig.ident, &f.attrs, f.sig.span(), block);
        }
        visit::visit_trait_item_fn(self, f);
    }

    fn visit_block(&mut self, b: &'ast syn::Block) {
        self.blocks += 1;
        visit::visit_block(self, b);
        self.blocks -= 1;
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        // One segment names something a `use` brought (that `use` is the
        // reference), a local item or a variable.
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            let segs = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.push(segs, false, line(p.segments[0].ident.span()));
        }
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.scan(m.tokens.clone());
    }
}

// --------------------------------------------------------- resolution

/// A reference into the library, resolved.
#[derive(Debug, Clone)]
struct Ref {
    /// The path in the library, from its root.
    target: Vec<String>,
    glob: bool,
    line: usize,
    text: String,
}

impl Walk {
    fn module(&self) -> &Module {
        self.module.as_ref().unwrap()
    }

    /// `segs`, written in `scope`, as a path of the library, if it is one.
    fn resolve(&self, scope: &[String], segs: &[String], depth: usize) -> Option<Vec<String>> {
        let bin = self.module().bin.is_some();
        let (first, rest) = segs.split_first()?;
        let local = |base: Vec<String>, rest: &[String]| -> Option<Vec<String>> {
            (!bin).then(|| base.into_iter().chain(rest.iter().cloned()).collect())
        };
        match first.as_str() {
            "crate" | "$crate" => local(vec![], rest),
            "carat_catalogd" => Some(rest.to_vec()),
            // `super` leads a path, or follows a leading `self`.
            "self" | "super" => {
                let segs = if first == "self" { rest } else { segs };
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let base = scope.get(..scope.len().checked_sub(ups)?)?.to_vec();
                local(base, &segs[ups..])
            }
            "Self" => None,
            name => {
                if let Some(to) = self.uses.get(&(scope.to_vec(), name.to_owned())) {
                    if depth > 16 || to.first().is_some_and(|f| f == name) && to.len() == 1 {
                        return None;
                    }
                    let full: Vec<String> = to.iter().chain(rest).cloned().collect();
                    return self.resolve(scope, &full, depth + 1);
                }
                let mut child = scope.to_vec();
                child.push(name.to_owned());
                if self.children.contains(&child) {
                    return local(child, rest);
                }
                None
            }
        }
    }

    /// Every reference of the file into the library.
    fn resolved(&self) -> Vec<Ref> {
        self.refs
            .iter()
            .filter_map(|r| {
                Some(Ref {
                    target: self.resolve(&r.scope, &r.segs, 0)?,
                    glob: r.glob,
                    line: r.line,
                    text: r.text(),
                })
            })
            .collect()
    }
}

// ------------------------------------------------------- import rules

/// `(module, the modules it must not name)`; `*`: every other module.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // Pure domain: it may clip text for its messages (`PURE_MAY_NAME`).
    ("catalog", &["*"]),
    // The one clipping function, which the domain uses: pure too.
    ("text", &["*"]),
    (
        "store",
        &[
            "carat", "sync", "schedule", "api", "snapshot", "state", "cli", "daemon",
        ],
    ),
    // A read never touches SQLite or Carat.
    ("api", &["store", "sync", "carat", "cli", "daemon"]),
    // The sync never touches the API.
    ("sync", &["api"]),
    // The configuration opens no socket and no database.
    ("config", &["store", "api", "activation", "daemon"]),
];

/// What a module whose rule forbids every other module (`*`) may still
/// name: the one clipping function (`text.rs` names nothing itself).
const PURE_MAY_NAME: &[&str] = &["text"];

/// Who may name `crate::cli`: the command line itself, the binary and
/// `lib.rs` (which declares it).
const CLI_USERS: &[&str] = &["cli", "main", "crate"];

/// Who may name `crate::sync`: the schedule, "the only caller of
/// `sync`", and the sync itself.
const SYNC_USERS: &[&str] = &["schedule", "sync"];

/// What of `sync` another module names today without calling the sync, by
/// name: `app.rs` ("construction shared by the daemon and the command
/// line") builds the `Syncer` for both; `cli` implements and shows
/// `Progress`, the trait the sync reports through. Any other name of
/// `sync` outside the schedule fails. (The one-shot `sync` command calls
/// `sync_type` on the `Syncer` that `app` built, a method call no path
/// shows: a caller besides the schedule, which ARCHITECTURE.md also
/// documents as the one-shot `sync` the store lock keeps out.)
const SYNC_NAMED: &[(&str, &str)] = &[("app", "Syncer"), ("cli", "Progress")];

/// What of `net` the configuration may name: it parses addresses and
/// checks the TLS files, and binds nothing (`serve*`, `Listener`, ...).
const CONFIG_NET: &[&str] = &["Cidr", "tls_acceptor", "NetError"];

/// Names that open a socket or a database, whatever the crate.
const OPENERS: &[&str] = &[
    "TcpListener",
    "TcpStream",
    "TcpSocket",
    "UdpSocket",
    "UnixListener",
    "UnixStream",
    "UnixDatagram",
    "UnixSocket",
];

/// Crates (or their parts) that are sockets or databases.
const OPENER_CRATES: &[&[&str]] = &[
    &["rusqlite"],
    &["libsqlite3_sys"],
    &["socket2"],
    &["rustix", "net"],
    &["nix", "sys", "socket"],
    &["libc", "socket"],
    &["libc", "bind"],
    &["libc", "listen"],
    &["libc", "connect"],
];

fn violation(m: &Module, r: &Ref, what: &str) -> String {
    format!("{}:{}: {} ({what})", m.rel, r.line, r.text)
}

/// The data-flow rules of `ARCHITECTURE.md` for one file.
fn check_imports(m: &Module, f: &syn::File) -> Vec<String> {
    let w = Walk::of(m, f);
    let own = m.top();
    let mut out = vec![];
    for r in w.resolved() {
        // A glob of the crate root names every module.
        let every = r.target.is_empty() && r.glob;
        let names = |module: &str| every || r.target.first().is_some_and(|t| t == module);
        let named = r.target.first().map_or("crate", String::as_str);
        if m.bin.is_none() {
            for (place, forbidden) in FORBIDDEN {
                if own != *place || named == own {
                    continue;
                }
                let any_other = forbidden.contains(&"*") && (every || !PURE_MAY_NAME.contains(&named));
                if any_other || forbidden.iter().any(|x| names(x)) {
                    out.push(violation(m, &r, &format!("{place} must not import {named}")));
                }
            }
        }
        // Who names it: the top-level module, `crate` (lib.rs) or the binary.
        let user = match (&m.bin, own) {
            (Some(_), _) => m.node(),
            (None, "") => "crate".into(),
            (None, top) => top.to_owned(),
        };
        if names("cli") && !CLI_USERS.contains(&user.as_str()) {
            out.push(violation(m, &r, "only the command line imports cli"));
        }
        if names("sync") && !SYNC_USERS.contains(&user.as_str()) {
            let named_only = |(u, item): &(&str, &str)| *u == user && r.target[1..].iter().any(|s| s == item);
            if every || !SYNC_NAMED.iter().any(named_only) {
                out.push(violation(m, &r, "the schedule is the only caller of sync"));
            }
        }
        if own == "config" && m.bin.is_none() && names("net") {
            let item = r.target.get(1).map(String::as_str);
            if every || r.glob && r.target.len() == 1 || item.is_some_and(|i| !CONFIG_NET.contains(&i)) {
                out.push(violation(m, &r, "config opens no socket: net's listeners"));
            }
        }
    }
    if own == "config" && m.bin.is_none() {
        out.extend(opens_something(m, &w));
    }
    out
}

/// Paths in `config` that name a socket or a database, of any crate.
fn opens_something(m: &Module, w: &Walk) -> Vec<String> {
    let mut out = vec![];
    for r in &w.refs {
        let expanded = w.expand(r);
        let opener = expanded.iter().any(|s| OPENERS.contains(&s.as_str()))
            || OPENER_CRATES
                .iter()
                .any(|c| expanded.starts_with(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
            || r.glob && [["std", "net"], ["tokio", "net"]].iter().any(|n| expanded == n);
        if opener {
            out.push(format!(
                "{}:{}: {} (config opens no socket and no database)",
                m.rel,
                r.line,
                r.text()
            ));
        }
    }
    out
}

impl Walk {
    /// A raw path with the `use`s of its scope expanded, whatever crate it
    /// names.
    fn expand(&self, r: &RawRef) -> Vec<String> {
        let mut segs = r.segs.clone();
        for _ in 0..16 {
            let Some(to) = segs
                .first()
                .and_then(|f| self.uses.get(&(r.scope.clone(), f.clone())))
            else {
                break;
            };
            if to.len() == 1 && to[0] == segs[0] {
                break;
            }
            segs = to.iter().chain(&segs[1..]).cloned().collect();
        }
        segs
    }
}

// ----------------------------------------------------- function length

const MAX_FN_LINES: usize = 100;

/// Functions past [`MAX_FN_LINES`], from their first line (attributes but
/// doc comments, visibility, qualifiers) to their closing brace, wherever
/// the brace is. The simulator and the binaries are exempt.
fn long_functions(m: &Module, f: &syn::File) -> Vec<String> {
    if m.rel.starts_with("sim/") || m.rel.starts_with("bin/") {
        return vec![];
    }
    Walk::of(m, f)
        .fns
        .iter()
        .filter(|s| s.end - s.start + 1 > MAX_FN_LINES)
        .map(|s| {
            format!(
                "{}:{}: fn {} is {} lines",
                m.rel,
                s.start,
                s.name,
                s.end - s.start + 1
            )
        })
        .collect()
}

// ------------------------------------------------------------- cycles

/// The import graph of a set of files: what each module's node refers to,
/// with the first reference as evidence.
struct Graph {
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

/// The library's modules (inline ones too), what each defines and
/// imports: enough to follow a path to the module defining its item.
struct Crate {
    /// Module path → the node of its file.
    modules: BTreeMap<Vec<String>, Vec<String>>,
    defined: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// `(module, name)` → library path (`None`: another crate).
    uses: BTreeMap<(Vec<String>, String), Option<Vec<String>>>,
    globs: BTreeMap<Vec<String>, Vec<Vec<String>>>,
}

impl Crate {
    fn of(walks: &[Walk]) -> Crate {
        let mut c = Crate {
            modules: BTreeMap::new(),
            defined: BTreeMap::new(),
            uses: BTreeMap::new(),
            globs: BTreeMap::new(),
        };
        for w in walks.iter().filter(|w| w.module().bin.is_none()) {
            // A file is its own node; an inline module is its file's (and a
            // `mod x;` is its parent's until `x`'s own file is seen).
            let file = w.module().path.clone();
            c.modules.insert(file.clone(), file.clone());
            for child in &w.children {
                c.modules.entry(child.clone()).or_insert_with(|| file.clone());
            }
            for (scope, names) in &w.defined {
                c.defined
                    .entry(scope.clone())
                    .or_default()
                    .extend(names.iter().cloned());
            }
            for ((scope, name), to) in &w.uses {
                c.uses
                    .insert((scope.clone(), name.clone()), w.resolve(scope, to, 0));
            }
            for (scope, from) in &w.globs {
                if let Some(t) = w.resolve(scope, from, 0) {
                    c.globs.entry(scope.clone()).or_default().push(t);
                }
            }
        }
        c
    }

    /// The node of the module that defines what `target` names (`None`:
    /// another crate).
    fn owner(&self, target: &[String], depth: usize) -> Option<Vec<String>> {
        let n = (0..=target.len())
            .rev()
            .find(|&n| self.modules.contains_key(&target[..n]))?;
        let (module, rest) = target.split_at(n);
        let node = self.modules[module].clone();
        let Some(name) = rest.first() else {
            return Some(node);
        };
        if depth > 16 || self.defined.get(module).is_some_and(|d| d.contains(name)) {
            return Some(node);
        }
        if let Some(to) = self.uses.get(&(module.to_vec(), name.clone())) {
            let to = to.as_ref()?;
            return self.owner(
                &to.iter().chain(&rest[1..]).cloned().collect::<Vec<_>>(),
                depth + 1,
            );
        }
        for g in self.globs.get(module).into_iter().flatten() {
            let there = self.defined.get(g).is_some_and(|d| d.contains(name))
                || self.uses.contains_key(&(g.clone(), name.clone()));
            if there {
                return self.owner(&g.iter().chain(rest).cloned().collect::<Vec<_>>(), depth + 1);
            }
        }
        Some(node)
    }
}

impl Graph {
    fn of(files: &[(Module, syn::File)]) -> Graph {
        let walks: Vec<Walk> = files.iter().map(|(m, f)| Walk::of(m, f)).collect();
        let krate = Crate::of(&walks);
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for w in &walks {
            let m = w.module();
            let from = m.node();
            edges.entry(from.clone()).or_default();
            for r in w.resolved() {
                let Some(to) = krate.owner(&r.target, 0) else {
                    continue;
                };
                // A child naming what an ancestor defines: not an edge.
                let ancestor = m.bin.is_none() && m.path.starts_with(&to);
                let to = node_name(&to);
                if to == from || ancestor {
                    continue;
                }
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("{}:{} {}", m.rel, r.line, r.text));
            }
        }
        Graph { edges }
    }

    /// Strongly connected components with more than one node (Tarjan).
    fn tangles(&self) -> Vec<Vec<String>> {
        struct T<'a> {
            g: &'a Graph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on: BTreeSet<&'a str>,
            out: Vec<Vec<String>>,
        }
        impl<'a> T<'a> {
            fn go(&mut self, v: &'a str) {
                let i = self.index.len();
                self.index.insert(v, i);
                self.low.insert(v, i);
                self.stack.push(v);
                self.on.insert(v);
                for w in self.g.edges.get(v).into_iter().flat_map(|e| e.keys()) {
                    let w = w.as_str();
                    if !self.index.contains_key(w) {
                        self.go(w);
                        let l = self.low[v].min(self.low[w]);
                        self.low.insert(v, l);
                    } else if self.on.contains(w) {
                        let l = self.low[v].min(self.index[w]);
                        self.low.insert(v, l);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut scc = vec![];
                    while let Some(w) = self.stack.pop() {
                        self.on.remove(w);
                        scc.push(w.to_owned());
                        if w == v {
                            break;
                        }
                    }
                    if scc.len() > 1 {
                        scc.sort();
                        self.out.push(scc);
                    }
                }
            }
        }
        let mut t = T {
            g: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: vec![],
            on: BTreeSet::new(),
            out: vec![],
        };
        for v in self.edges.keys() {
            if !t.index.contains_key(v.as_str()) {
                t.go(v);
            }
        }
        t.out.sort();
        t.out
    }

    /// Every elementary cycle inside each tangle (at most 50 each), each
    /// from its smallest node.
    fn cycles(&self) -> Vec<Vec<String>> {
        let mut out = vec![];
        for scc in self.tangles() {
            let inside: BTreeSet<&str> = scc.iter().map(String::as_str).collect();
            let mut found = vec![];
            for start in &scc {
                let mut path = vec![start.clone()];
                self.paths_back(start, &inside, &mut path, &mut found);
            }
            found.truncate(50);
            out.extend(found);
        }
        out
    }

    fn paths_back(
        &self,
        start: &str,
        inside: &BTreeSet<&str>,
        path: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        let last = path.last().unwrap().clone();
        for next in self.edges.get(&last).into_iter().flat_map(|e| e.keys()) {
            if next == start {
                found.push(path.clone());
            } else if inside.contains(next.as_str())
                && next.as_str() > start
                && !path.contains(next)
                && found.len() < 50
            {
                path.push(next.clone());
                self.paths_back(start, inside, path, found);
                path.pop();
            }
        }
    }
}

/// Every import cycle between the modules of `files`, each with the
/// reference that makes each of its edges.
fn import_cycles(files: &[(Module, syn::File)]) -> Vec<String> {
    let g = Graph::of(files);
    g.cycles()
        .into_iter()
        .map(|c| {
            let mut hops = vec![];
            for (i, from) in c.iter().enumerate() {
                let to = &c[(i + 1) % c.len()];
                hops.push(format!("  {from} → {to}: {}", g.edges[from][to]));
            }
            format!("{} → {}\n{}", c.join(" → "), c[0], hops.join("\n"))
        })
        .collect()
}

// ------------------------------------------------------ the real tree

fn every_file(check: fn(&Module, &syn::File) -> Vec<String>) -> Vec<String> {
    tree().iter().flat_map(|(m, f)| check(m, f)).collect()
}

#[test]
fn imports_follow_the_data_flow() {
    let broken = every_file(check_imports);
    assert!(
        broken.is_empty(),
        "imports against the flow:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_function_outside_tests_and_the_simulator_runs_past_100_lines() {
    let long = every_file(long_functions);
    assert!(long.is_empty(), "functions past 100 lines:\n{}", long.join("\n"));
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let cycles = import_cycles(&tree());
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The checkers see what the rules are about: a sanity check that the
/// walk of the real tree finds the references it must.
#[test]
fn the_walk_sees_the_real_references() {
    let files = tree();
    let g = Graph::of(&files);
    let has = |a: &str, b: &str| g.edges.get(a).is_some_and(|e| e.contains_key(b));
    // `use super::routes::{self, Response}` and `routes::respond(..)`.
    assert!(has("api::feed", "api::routes"));
    // `pub mod routes;` and `routes::Counters` in `api/mod.rs`.
    assert!(has("api", "api::routes"));
    // `use crate::sync::{Progress, Syncer}`.
    assert!(has("schedule", "sync"));
    // `carat_catalogd::cli::...` from the binary.
    assert!(has("main", "cli::commands"));
    // `crate::state::stopped(..)` inside `tokio::select!` in `net.rs`.
    assert!(has("net", "state"));
    // Re-exports are followed: `crate::carat::CaratClient` is `carat::client`'s.
    let walks: Vec<Walk> = files.iter().map(|(m, f)| Walk::of(m, f)).collect();
    let owner = Crate::of(&walks).owner(&["carat".into(), "CaratClient".into()], 0);
    assert_eq!(owner, Some(vec!["carat".to_owned(), "client".to_owned()]));
}

// ------------------------------------------------- breaking sources

mod breaking {
    use super::*;

    fn file(src: &str) -> syn::File {
        syn::parse_file(src).unwrap()
    }

    fn imports(rel: &str, src: &str) -> Vec<String> {
        check_imports(&Module::of(rel), &file(src))
    }

    fn cycles(files: &[(&str, &str)]) -> Vec<String> {
        let files: Vec<_> = files
            .iter()
            .map(|(rel, src)| (Module::of(rel), file(src)))
            .collect();
        import_cycles(&files)
    }

    fn assert_names(found: &[String], wanted: &[&str]) {
        for w in wanted {
            assert!(
                found.iter().any(|f| f.contains(w)),
                "{w:?} not reported; reported:\n{}",
                found.join("\n")
            );
        }
    }

    #[test]
    fn a_grouped_use_in_api() {
        let v = imports("api/x.rs", "use crate::{store, sync};\n");
        assert_names(&v, &["api/x.rs:1: crate::store ", "api/x.rs:1: crate::sync "]);
        // `sync` is the schedule's besides.
        assert_eq!(v.len(), 3, "{v:?}");
    }

    #[test]
    fn nested_groups_self_and_renames_in_store() {
        let src = "use crate::{catalog::{self, Ddd}, run::{Outcome as O, x::{self as y}}, \
                   carat::{wire::{self}}};\nuse self::super::super::snapshot as s;\n";
        let v = imports("store/rows.rs", src);
        assert_names(&v, &["crate::carat::wire (store", "self::super::super::snapshot"]);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn super_super_from_a_submodule() {
        let v = imports(
            "api/x.rs",
            "use super::super::store::Store;\nuse super::routes;\n",
        );
        assert_names(&v, &["api/x.rs:1: super::super::store::Store"]);
        assert_eq!(v.len(), 1, "{v:?}");
        // From a top-level file, one `super` is the root.
        let v = imports("api/mod.rs", "use super::carat;\n");
        assert_names(&v, &["super::carat"]);
    }

    #[test]
    fn a_glob_of_the_crate_root() {
        assert_names(&imports("catalog.rs", "use crate::*;\n"), &["crate::*"]);
        assert_names(&imports("api/x.rs", "use crate::*;\n"), &["crate::*"]);
        assert_names(
            &imports("daemon.rs", "use crate::*;\n"),
            &["only the command line", "only caller of sync"],
        );
        assert_names(
            &imports("api/x.rs", "use crate::store::*;\n"),
            &["crate::store::*"],
        );
        // `catalog` may name itself and the clipping in `text`, nothing else.
        assert!(imports("catalog.rs", "use crate::catalog::Ddd;\nuse std::fmt;\n").is_empty());
        assert!(imports("catalog.rs", "use crate::text::{CODE_MAX, clip};\n").is_empty());
        assert_names(
            &imports("catalog.rs", "fn f() { crate::time::now(); }\n"),
            &["crate::time::now"],
        );
        assert_names(
            &imports("text.rs", "use crate::catalog::Ddd;\n"),
            &["crate::catalog::Ddd"],
        );
    }

    #[test]
    fn inline_paths_in_code_types_and_macros() {
        let src = "fn f(h: crate::store::StoreHandle) {\n\
                   let _ = crate::carat::client::TOKEN_MAX_AGE;\n\
                   tokio::select! { _ = crate::sync::run() => {} }\n\
                   let _: Vec<crate::daemon::Daemon> = vec![];\n}\n";
        let v = imports("api/x.rs", src);
        assert_names(
            &v,
            &[
                "x.rs:1: crate::store::StoreHandle",
                "x.rs:2: crate::carat::client::TOKEN_MAX_AGE",
                "x.rs:3: crate::sync::run",
                "x.rs:4: crate::daemon::Daemon",
            ],
        );
        // Through a `use` of a module: `store::lock::acquire`.
        let v = imports(
            "api/x.rs",
            "use crate::store;\nfn f() { store::lock::acquire(); }\n",
        );
        assert_names(&v, &["x.rs:2: store::lock::acquire"]);
    }

    #[test]
    fn after_a_test_module_and_inside_one() {
        let src = "use crate::catalog::Ddd;\n\
                   #[cfg(test)]\nmod tests {\n    use crate::store::Store;\n    use crate::cli;\n}\n\
                   #[cfg(all(test, unix))]\nfn helper() { crate::store::open(); }\n\
                   #[test]\nfn t() { crate::carat::x(); }\n\
                   use crate::store::StoreHandle;\n";
        let v = imports("api/x.rs", src);
        assert_names(&v, &["api/x.rs:11: crate::store::StoreHandle"]);
        assert_eq!(v.len(), 1, "test items may import anything: {v:?}");
        // `cfg(not(test))` and `cfg(any(test, x))` are compiled outside tests.
        let v = imports(
            "api/x.rs",
            "#[cfg(not(test))]\nuse crate::store::A;\n#[cfg(any(test, unix))]\nuse crate::store::B;\n",
        );
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn the_sync_never_touches_the_api() {
        assert_names(
            &imports("sync.rs", "use crate::api::routes::Counters;\n"),
            &["sync must not import api"],
        );
        assert_names(
            &imports("sync/worker.rs", "use super::super::api;\n"),
            &["sync must not import api"],
        );
        assert!(imports("sync/worker.rs", "use super::Syncer;\nuse crate::sync::gate;\n").is_empty());
    }

    #[test]
    fn the_schedule_is_the_only_caller_of_the_sync() {
        assert_names(
            &imports("daemon.rs", "use crate::sync::Syncer;\n"),
            &["only caller of sync"],
        );
        assert_names(
            &imports("api/control.rs", "fn f() { crate::sync::Syncer::run(); }\n"),
            &["only caller of sync"],
        );
        assert_names(
            &imports("main.rs", "use carat_catalogd::sync;\n"),
            &["only caller of sync"],
        );
        // `app` builds the syncer; calling anything else of `sync` is a call.
        assert!(
            imports(
                "app.rs",
                "use crate::sync::Syncer;\nfn f() -> Syncer { todo!() }\n"
            )
            .is_empty()
        );
        assert_names(
            &imports("app.rs", "fn f() { crate::sync::run_once(); }\n"),
            &["only caller of sync"],
        );
        assert!(imports("schedule.rs", "use crate::sync::{Progress, Syncer};\n").is_empty());
        assert!(imports("cli/commands.rs", "use crate::sync::Progress;\n").is_empty());
        assert_names(
            &imports("cli/commands.rs", "use crate::sync::Syncer;\n"),
            &["only caller of sync"],
        );
        // `main.rs`'s own `crate::` is the binary.
        assert!(imports("main.rs", "use crate::sync;\nmod sync {}\n").is_empty());
    }

    #[test]
    fn the_configuration_opens_no_socket_and_no_database() {
        let src = "use crate::store::Store;\n\
                   use tokio::net::UnixListener as L;\n\
                   fn f() {\n\
                   let _ = std::net::TcpStream::connect(\"x\");\n\
                   let _ = rusqlite::Connection::open(\"db\");\n\
                   let _ = crate::net::serve_tcp();\n\
                   let _ = crate::net::Cidr::parse(\"10.0.0.0/8\");\n\
                   let _ = crate::net::tls_acceptor(b\"\", b\"\");\n\
                   let _ = std::net::SocketAddr::from(([0; 4], 0));\n\
                   }\n";
        let v = imports("config.rs", src);
        assert_names(
            &v,
            &[
                "config.rs:1: crate::store::Store",
                "config.rs:2: tokio::net::UnixListener",
                "config.rs:4: std::net::TcpStream::connect",
                "config.rs:5: rusqlite::Connection::open",
                "config.rs:6: crate::net::serve_tcp",
            ],
        );
        assert_eq!(v.len(), 5, "Cidr, tls_acceptor, SocketAddr open nothing: {v:?}");
        // Through a `use`: `use tokio::net; net::TcpListener::bind(..)`.
        let v = imports(
            "config.rs",
            "use tokio::net;\nfn f() { net::TcpListener::bind(\"a\"); }\n",
        );
        assert_names(&v, &["config.rs:2: net::TcpListener::bind"]);
    }

    #[test]
    fn nothing_outside_the_command_line_imports_it() {
        assert_names(
            &imports("daemon.rs", "use crate::cli::render;\n"),
            &["only the command line imports cli"],
        );
        assert_names(
            &imports("bin/carat-sim.rs", "use carat_catalogd::cli;\n"),
            &["only the command line"],
        );
        assert!(imports("main.rs", "use carat_catalogd::cli::commands::{run, sync};\n").is_empty());
        assert!(imports("cli/watch.rs", "use super::render;\nuse crate::cli::client;\n").is_empty());
    }

    fn long_fn(head: &str, lines: usize, close: &str) -> String {
        let body: String = (0..lines - 2)
            .map(|i| format!("    let _x{i} = {i};\n"))
            .collect();
        format!("{head} {{\n{body}{close}\n")
    }

    fn long(rel: &str, src: &str) -> Vec<String> {
        long_functions(&Module::of(rel), &file(src))
    }

    #[test]
    fn a_long_function_whatever_its_qualifiers_and_braces() {
        // 101 lines, the closing brace after code on the last line.
        let f = long_fn("pub(super) fn f()", 101, "    let _end = 0; }");
        assert_names(&long("api/x.rs", &f), &["api/x.rs:1: fn f is 101 lines"]);
        for head in [
            "pub(crate) fn f()",
            "pub const fn f()",
            "pub unsafe fn f()",
            "pub(crate) async fn f()",
            "pub extern \"C\" fn f()",
            "pub(in crate::api) async unsafe fn f()",
        ] {
            assert_names(&long("x.rs", &long_fn(head, 101, "}")), &["fn f is 101 lines"]);
        }
        // 100 lines is the most.
        assert!(long("x.rs", &long_fn("fn f()", 100, "}")).is_empty());
        // A method, a trait's default method; attributes count, doc comments do not.
        let m = long_fn("    #[inline]\n    pub(crate) fn m(&self)", 100, "    }");
        let v = long("x.rs", &format!("/// Doc.\nimpl S {{\n    /// Doc.\n{m}}}\n"));
        assert_names(&v, &["x.rs:4: fn m is 101 lines"]);
        let t = long_fn("    fn d(&self)", 101, "    }");
        assert_names(
            &long("x.rs", &format!("trait T {{\n{t}}}\n")),
            &["fn d is 101 lines"],
        );
        // The last statement and the brace on one line.
        let packed = format!("fn p() {{\n{}    0; }}\n", "    0;\n".repeat(100));
        assert_names(&long("x.rs", &packed), &["fn p is 102 lines"]);
    }

    #[test]
    fn a_long_function_in_tests_or_the_simulator_is_allowed() {
        let f = long_fn("fn f()", 150, "}");
        assert!(long("sim/server.rs", &f).is_empty());
        assert!(long("bin/carat-sim.rs", &f).is_empty());
        assert!(long("x.rs", &format!("#[cfg(test)]\nmod tests {{\n{f}}}\n")).is_empty());
        assert!(long("x.rs", &format!("#[tokio::test]\nasync {f}")).is_empty());
        // After a test module, the rule holds again.
        let after = format!("#[cfg(test)]\nmod tests {{}}\n{f}");
        assert_names(&long("x.rs", &after), &["x.rs:3: fn f is 150 lines"]);
    }

    #[test]
    fn a_cycle_between_two_modules() {
        let v = cycles(&[
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            ("b.rs", "pub struct B;\nfn f() { let _ = crate::a::A; }\n"),
        ]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_names(
            &v,
            &[
                "a → b → a",
                "a → b: a.rs:1 crate::b::B",
                "b → a: b.rs:2 crate::a::A",
            ],
        );
    }

    #[test]
    fn a_cycle_through_three_modules_and_one_after_a_test_module() {
        let v = cycles(&[
            (
                "a.rs",
                "#[cfg(test)]\nmod tests { use crate::c; }\nuse crate::b::B;\n",
            ),
            ("b.rs", "pub struct B;\nuse crate::c::C;\n"),
            ("c.rs", "pub struct C;\nfn f() { crate::a::g(); }\n"),
        ]);
        assert_names(&v, &["a → b → c → a"]);
        // The test module alone makes no cycle.
        let v = cycles(&[
            ("a.rs", "pub fn g() {}\n"),
            (
                "c.rs",
                "#[cfg(test)]\nmod tests { use crate::a::g; }\nuse crate::a::g;\n",
            ),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn sibling_submodules_are_distinct_nodes() {
        // `api/feed.rs` ↔ `api/routes.rs`, the audit's first cycle.
        let v = cycles(&[
            ("api/mod.rs", "pub mod feed;\npub mod routes;\npub struct Api;\n"),
            (
                "api/feed.rs",
                "use super::routes::{self, Response};\nuse super::Api;\npub struct LongPoll;\n",
            ),
            (
                "api/routes.rs",
                "use super::Api;\npub struct Response;\nfn f() { super::feed::event_stream(); }\n",
            ),
        ]);
        assert_names(&v, &["api::feed → api::routes → api::feed"]);
    }

    #[test]
    fn parent_and_child_and_re_exports() {
        // A child naming what its parent defines, and the parent naming
        // the child: no cycle.
        let family = [
            (
                "api/mod.rs",
                "pub mod routes;\npub struct Api { c: routes::Counters }\n",
            ),
            ("api/routes.rs", "pub struct Counters;\nfn f(_: &super::Api) {}\n"),
        ];
        assert!(cycles(&family).is_empty());
        // A child naming its parent's re-export names the module that
        // defines it: the re-export does not hide a cycle.
        let v = cycles(&[
            (
                "api/mod.rs",
                "pub mod feed;\npub mod routes;\npub use feed::LongPoll;\n",
            ),
            (
                "api/feed.rs",
                "pub struct LongPoll;\nfn f() { super::routes::respond(); }\n",
            ),
            ("api/routes.rs", "pub fn respond() {}\nuse super::LongPoll;\n"),
        ]);
        assert_names(
            &v,
            &[
                "api::feed → api::routes → api::feed",
                "api/routes.rs:2 super::LongPoll",
            ],
        );
        // Through a glob re-export too.
        let v = cycles(&[
            (
                "api/mod.rs",
                "pub mod feed;\npub mod routes;\npub use self::feed::*;\n",
            ),
            (
                "api/feed.rs",
                "pub struct LongPoll;\nfn f() { super::routes::respond(); }\n",
            ),
            (
                "api/routes.rs",
                "pub fn respond() {}\nfn g(_: super::LongPoll) {}\n",
            ),
        ]);
        assert_names(&v, &["api::feed → api::routes → api::feed"]);
    }

    #[test]
    fn events_and_state_inside_a_macro() {
        // `events` ↔ `state`, the audit's second cycle: one side only in
        // `tokio::select!`, which `syn` does not parse.
        let v = cycles(&[
            (
                "events.rs",
                "pub struct Feed;\nasync fn w() { tokio::select! { _ = crate::state::stopped() => {} } }\n",
            ),
            (
                "state.rs",
                "use crate::events::Feed;\npub async fn stopped() {}\n",
            ),
        ]);
        assert_names(
            &v,
            &["events → state → events", "events.rs:2 crate::state::stopped"],
        );
    }
}
