//! Evaluator: files (with their imports) to values. Turning values into jobs is `schema`'s job.

use crate::ast::{BinOp, Expr, ExprKind, Item, ItemKind, UnOp};
use crate::diag::{Error, Result, SourceMap, Span};
use crate::suggest::did_you_mean;
use crate::value::{merge, Field, List, Quantity, Tuple, Unit, Value};
use crate::{
    lexer, parser, EVAL_STEPS_MAX, IMPORT_DEPTH_MAX, LIST_LEN_MAX, SOURCE_FILES_MAX,
    SOURCE_FILE_BYTES_MAX,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const BUILTINS: [&str; 2] = ["str", "len"];
/// Bytes of string built per evaluation step charged: bounds all strings built by a load
/// to EVAL_STEPS_MAX * STRING_BYTES_PER_STEP (256 MiB).
const STRING_BYTES_PER_STEP: usize = 256;

/// A `job` or `alloc` declaration, evaluated but not yet checked against the schema.
#[derive(Debug, Clone)]
pub(crate) struct Decl {
    pub name: Rc<str>,
    pub name_span: Span,
    pub value: Value,
    pub value_span: Span,
}

#[derive(Debug, Clone)]
struct Binding {
    name: Rc<str>,
    value: Value,
    name_span: Span,
    value_span: Span,
}

/// One evaluated file: its top-level names in order, and its jobs and allocs.
#[derive(Debug, Default)]
pub(crate) struct Module {
    bindings: Vec<Binding>,
    pub jobs: Vec<Decl>,
    pub allocs: Vec<Decl>,
}

#[derive(Default)]
struct Scope {
    index: HashMap<Rc<str>, usize>,
    bindings: Vec<Binding>,
}

impl Scope {
    fn get(&self, name: &str) -> Option<&Binding> {
        self.index.get(name).map(|&i| &self.bindings[i])
    }
}

/// Reads a source file, refusing anything that is not a regular file (a FIFO or a device
/// would block or never end) and anything larger than SOURCE_FILE_BYTES_MAX.
pub(crate) fn read_source(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > SOURCE_FILE_BYTES_MAX as u64 {
        return Err(format!(
            "{} is {} bytes; the most a BCL file may have is {SOURCE_FILE_BYTES_MAX}",
            path.display(),
            meta.len()
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(SOURCE_FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > SOURCE_FILE_BYTES_MAX {
        return Err(format!(
            "{} is larger than the most a BCL file may have ({SOURCE_FILE_BYTES_MAX} bytes)",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

pub(crate) struct Loader {
    pub sources: SourceMap,
    steps: u64,
    /// Evaluated files by canonical path: a file imported twice is evaluated once.
    modules: HashMap<PathBuf, Rc<Module>>,
    /// Files being evaluated, outermost first: an import of one of them is a cycle.
    stack: Vec<PathBuf>,
}

impl Loader {
    pub fn new() -> Loader {
        Loader {
            sources: SourceMap::default(),
            steps: 0,
            modules: HashMap::new(),
            stack: Vec::new(),
        }
    }

    /// Evaluates the root file. `name` is how diagnostics name it; imports are resolved
    /// relative to its directory.
    pub fn load_root(&mut self, name: &str, text: String) -> Result<Module> {
        if text.len() > SOURCE_FILE_BYTES_MAX {
            let file = self.sources.add(name.to_string(), String::new());
            return Err(Error::new(
                Span::new(file, 0, 0),
                format!(
                    "the file is {} bytes; the most a BCL file may have is {SOURCE_FILE_BYTES_MAX}",
                    text.len()
                ),
            ));
        }
        let path = Path::new(name);
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let file = self.sources.add(name.to_string(), text);
        self.stack.push(key);
        let module = self.eval_file(file, &dir, 0);
        self.stack.pop();
        module
    }

    fn step(&mut self, span: Span) -> Result<()> {
        charge(&mut self.steps, span)
    }

    fn eval_file(&mut self, file: u32, dir: &Path, depth: usize) -> Result<Module> {
        let tokens = lexer::lex(file, self.sources.text(file))?;
        let items = parser::parse(tokens)?;
        let declared: HashMap<&str, Span> = items
            .iter()
            .filter(|i| !matches!(i.kind, ItemKind::Import { .. }))
            .map(|i| (&*i.name, i.name_span))
            .collect();
        let mut scope = Scope::default();
        let mut module = Module::default();
        for item in &items {
            self.eval_item(item, dir, depth, &declared, &mut scope, &mut module)?;
        }
        module.bindings = scope.bindings;
        Ok(module)
    }

    fn eval_item(
        &mut self,
        item: &Item,
        dir: &Path,
        depth: usize,
        declared: &HashMap<&str, Span>,
        scope: &mut Scope,
        module: &mut Module,
    ) -> Result<()> {
        let expr = match (&item.kind, &item.value) {
            (ItemKind::Import { path, alias }, _) => {
                return self.eval_import(path, alias.as_ref(), item.name_span, dir, depth, scope)
            }
            (_, Some(expr)) => expr,
            // The parser gives every other item a value.
            (_, None) => return Ok(()),
        };
        let value = self.eval(expr, scope, declared)?;
        let binding = Binding {
            name: item.name.clone(),
            value: value.clone(),
            name_span: item.name_span,
            value_span: expr.span,
        };
        self.bind(scope, binding)?;
        let decl = Decl {
            name: item.name.clone(),
            name_span: item.name_span,
            value,
            value_span: expr.span,
        };
        match item.kind {
            ItemKind::Job => module.jobs.push(decl),
            ItemKind::Alloc => module.allocs.push(decl),
            _ => {}
        }
        Ok(())
    }

    /// `import 'path' as name` binds the file's names as one tuple; `import 'path'` binds
    /// each of them here.
    fn eval_import(
        &mut self,
        path: &str,
        alias: Option<&(Rc<str>, Span)>,
        path_span: Span,
        dir: &Path,
        depth: usize,
        scope: &mut Scope,
    ) -> Result<()> {
        let imported = self.import(path, path_span, dir, depth)?;
        let Some((name, name_span)) = alias else {
            for b in &imported.bindings {
                if let Some(prev) = scope.get(&b.name) {
                    return Err(Error::new(
                        path_span,
                        format!(
                            "this import defines `{}`, which is already defined at line {}",
                            b.name,
                            self.sources.line_of(prev.name_span)
                        ),
                    )
                    .hint("import the file under a name instead: `import '...' as lib`, then use `lib.NAME`"));
                }
                self.bind(scope, b.clone())?;
            }
            return Ok(());
        };
        let mut fields = Vec::with_capacity(imported.bindings.len());
        for b in &imported.bindings {
            // Charged: the same file imported under many names builds many tuples.
            self.step(path_span)?;
            fields.push(Field {
                key: b.name.clone(),
                key_span: b.name_span,
                value: b.value.clone(),
                value_span: b.value_span,
            });
        }
        let tuple = Tuple::new(fields, *name_span)?;
        self.bind(
            scope,
            Binding {
                name: name.clone(),
                value: Value::Tuple(Rc::new(tuple)),
                name_span: *name_span,
                value_span: path_span,
            },
        )
    }

    fn bind(&self, scope: &mut Scope, b: Binding) -> Result<()> {
        if let Some(prev) = scope.get(&b.name) {
            return Err(Error::new(
                b.name_span,
                format!(
                    "`{}` is already defined at line {}{}",
                    b.name,
                    self.sources.line_of(prev.name_span),
                    if prev.name_span.file != b.name_span.file {
                        format!(" of {}", self.sources.name(prev.name_span.file))
                    } else {
                        String::new()
                    }
                ),
            )
            .hint(format!(
                "names are defined once; to change a copy, write `other = {} {{ ... }}`",
                b.name
            )));
        }
        scope.index.insert(b.name.clone(), scope.bindings.len());
        scope.bindings.push(b);
        Ok(())
    }

    fn import(&mut self, path: &str, span: Span, dir: &Path, depth: usize) -> Result<Rc<Module>> {
        if depth + 1 > IMPORT_DEPTH_MAX {
            return Err(Error::new(
                span,
                format!("imports are nested more than {IMPORT_DEPTH_MAX} files deep"),
            ));
        }
        if path.is_empty() {
            return Err(Error::new(span, "the import path is empty"));
        }
        let joined = dir.join(path);
        let key = std::fs::canonicalize(&joined).map_err(|e| {
            Error::new(span, format!("cannot import {}: {e}", joined.display()))
                .hint("import paths are relative to the importing file's directory")
        })?;
        if let Some(pos) = self.stack.iter().position(|p| *p == key) {
            let mut chain: Vec<String> = self.stack[pos..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            chain.push(key.display().to_string());
            return Err(
                Error::new(span, format!("import cycle: {}", chain.join(" -> ")))
                    .hint("move what both files need into a third file that imports neither"),
            );
        }
        if let Some(m) = self.modules.get(&key) {
            return Ok(m.clone());
        }
        if self.sources.len() >= SOURCE_FILES_MAX {
            return Err(Error::new(
                span,
                format!("more than {SOURCE_FILES_MAX} files are imported"),
            ));
        }
        let text = read_source(&joined).map_err(|msg| Error::new(span, msg))?;
        let file = self.sources.add(joined.display().to_string(), text);
        let sub_dir = joined.parent().map(Path::to_path_buf).unwrap_or_default();
        self.stack.push(key.clone());
        let result = self.eval_file(file, &sub_dir, depth + 1);
        self.stack.pop();
        let module = Rc::new(result?);
        self.modules.insert(key, module.clone());
        Ok(module)
    }

    fn eval(&mut self, e: &Expr, scope: &Scope, declared: &HashMap<&str, Span>) -> Result<Value> {
        self.step(e.span)?;
        match &e.kind {
            ExprKind::Num(q) => Ok(Value::Num(*q)),
            ExprKind::Str(s) => Ok(Value::Str(s.clone())),
            ExprKind::Bool(b) => Ok(Value::Bool(*b)),
            ExprKind::Var(name) => match scope.get(name) {
                Some(b) => Ok(b.value.clone()),
                None => Err(self.undefined(name, e.span, scope, declared)),
            },
            ExprKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(crate::value::Item {
                        value: self.eval(item, scope, declared)?,
                        span: item.span,
                    });
                }
                Ok(Value::List(Rc::new(List::new(out, e.span)?)))
            }
            ExprKind::Tuple(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    out.push(Field {
                        key: f.key.clone(),
                        key_span: f.key_span,
                        value: self.eval(&f.value, scope, declared)?,
                        value_span: f.value.span,
                    });
                }
                Ok(Value::Tuple(Rc::new(Tuple::new(out, e.span)?)))
            }
            ExprKind::Field(base, name, name_span) => {
                let v = self.eval(base, scope, declared)?;
                let Value::Tuple(t) = &v else {
                    return Err(Error::new(
                        *name_span,
                        format!("`.{name}` needs a tuple, but this is {}", v.describe()),
                    ));
                };
                match t.get(name) {
                    Some(f) => Ok(f.value.clone()),
                    None => Err(Error::new(
                        *name_span,
                        format!("this tuple has no field `{name}`"),
                    )
                    .maybe_hint(did_you_mean(name, t.keys()).or_else(|| fields_hint(t)))),
                }
            }
            ExprKind::Index(base, index) => {
                let b = self.eval(base, scope, declared)?;
                let i = self.eval(index, scope, declared)?;
                index_value(&b, &i, index.span)
            }
            ExprKind::Override(base, over) => {
                let b = self.eval(base, scope, declared)?;
                let o = self.eval(over, scope, declared)?;
                let (Value::Tuple(bt), Value::Tuple(ot)) = (&b, &o) else {
                    return Err(Error::new(
                        base.span,
                        format!(
                            "only a tuple can be extended with `{{ ... }}`, but this is {}",
                            b.describe()
                        ),
                    ));
                };
                let steps = &mut self.steps;
                let merged = merge(bt, ot, e.span, &mut |_| charge(steps, e.span))?;
                Ok(Value::Tuple(Rc::new(merged)))
            }
            ExprKind::Call(name, name_span, args) => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(self.eval(a, scope, declared)?);
                }
                call(name, *name_span, &values, e.span)
            }
            ExprKind::Unary(op, inner) => {
                let v = self.eval(inner, scope, declared)?;
                match (op, &v) {
                    (UnOp::Neg, Value::Num(q)) => Ok(Value::Num(Quantity {
                        value: -q.value,
                        unit: q.unit,
                    })),
                    (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (UnOp::Neg, _) => Err(Error::new(
                        inner.span,
                        format!("`-` needs a number, but this is {}", v.describe()),
                    )),
                    (UnOp::Not, _) => Err(Error::new(
                        inner.span,
                        format!("`!` needs a boolean, but this is {}", v.describe()),
                    )),
                }
            }
            ExprKind::Chain(first, rest) => {
                let mut left = self.eval(first, scope, declared)?;
                let mut left_span = first.span;
                for (op, right) in rest {
                    left = self.binary(*op, left, left_span, right, scope, declared)?;
                    left_span = left_span.to(right.span);
                }
                Ok(left)
            }
            ExprKind::If(cond, then, other) => {
                let c = self.eval(cond, scope, declared)?;
                match c {
                    Value::Bool(true) => self.eval(then, scope, declared),
                    Value::Bool(false) => self.eval(other, scope, declared),
                    _ => Err(Error::new(
                        cond.span,
                        format!(
                            "the condition of `if` must be a boolean, but this is {}",
                            c.describe()
                        ),
                    )
                    .hint("compare values to get a boolean, as in `if env == 'prod' then ...`")),
                }
            }
        }
    }

    fn undefined(
        &self,
        name: &str,
        span: Span,
        scope: &Scope,
        declared: &HashMap<&str, Span>,
    ) -> Error {
        let err = Error::new(span, format!("`{name}` is not defined"));
        if let Some(later) = declared.get(name) {
            if later.file == span.file && later.start > span.start {
                return err.hint(format!(
                    "it is defined later, at line {}: define names before using them",
                    self.sources.line_of(*later)
                ));
            }
        }
        let names = scope.bindings.iter().map(|b| &*b.name);
        match did_you_mean(name, names.chain(BUILTINS)) {
            Some(h) => err.hint(h),
            None if name.starts_with('%') || name == "port" || name == "task_index" => err
                .hint("runtime substitutions are written inside strings: '%port%', '%task_index%'"),
            None => err.hint("strings are quoted: write 'text' for a literal"),
        }
    }

    /// `left op b`, where `left` is the value of the chain so far, written at `left_span`.
    fn binary(
        &mut self,
        op: BinOp,
        left: Value,
        left_span: Span,
        b: &Expr,
        scope: &Scope,
        declared: &HashMap<&str, Span>,
    ) -> Result<Value> {
        // && and || evaluate their right side only when needed.
        if matches!(op, BinOp::And | BinOp::Or) {
            let Value::Bool(l) = left else {
                return Err(Error::new(
                    left_span,
                    format!(
                        "`{}` needs booleans, but this is {}",
                        op.symbol(),
                        left.describe()
                    ),
                ));
            };
            if (op == BinOp::And && !l) || (op == BinOp::Or && l) {
                return Ok(Value::Bool(l));
            }
            let right = self.eval(b, scope, declared)?;
            return match right {
                Value::Bool(r) => Ok(Value::Bool(r)),
                _ => Err(Error::new(
                    b.span,
                    format!(
                        "`{}` needs booleans, but this is {}",
                        op.symbol(),
                        right.describe()
                    ),
                )),
            };
        }
        let right = self.eval(b, scope, declared)?;
        let span = left_span.to(b.span);
        match (&left, &right) {
            (Value::Num(x), Value::Num(y)) => numeric(op, *x, *y, span, b.span),
            (Value::Str(x), Value::Str(y)) => match op {
                BinOp::Add => {
                    // Strings built cost steps by size: many large strings would otherwise
                    // fill memory within the step budget.
                    let len = x.len() + y.len();
                    self.steps = self
                        .steps
                        .saturating_add((len / STRING_BYTES_PER_STEP) as u64);
                    self.step(span)?;
                    let mut s = String::with_capacity(len);
                    s.push_str(x);
                    s.push_str(y);
                    Value::string(s, span)
                }
                BinOp::Eq => Ok(Value::Bool(x == y)),
                BinOp::Ne => Ok(Value::Bool(x != y)),
                BinOp::Lt => Ok(Value::Bool(x < y)),
                BinOp::Le => Ok(Value::Bool(x <= y)),
                BinOp::Gt => Ok(Value::Bool(x > y)),
                BinOp::Ge => Ok(Value::Bool(x >= y)),
                _ => Err(
                    Error::new(span, format!("`{}` does not apply to strings", op.symbol()))
                        .hint("strings support + (concatenation) and comparisons"),
                ),
            },
            (Value::Bool(x), Value::Bool(y)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                Ok(Value::Bool((x == y) == (op == BinOp::Eq)))
            }
            (Value::List(x), Value::List(y)) if op == BinOp::Add => {
                let len = x.items.len() + y.items.len();
                if len > LIST_LEN_MAX {
                    return Err(Error::new(
                        span,
                        format!("this list would have {len} items; the most is {LIST_LEN_MAX}"),
                    ));
                }
                self.steps = self.steps.saturating_add(len as u64);
                self.step(span)?;
                let items = x.items.iter().chain(y.items.iter()).cloned().collect();
                Ok(Value::List(Rc::new(List::new(items, span)?)))
            }
            (Value::Str(_), Value::Num(_)) | (Value::Num(_), Value::Str(_)) if op == BinOp::Add => {
                Err(Error::new(span, "cannot add a string and a number")
                    .hint("convert the number with str(...), as in 'web-' + str(3)"))
            }
            (Value::Tuple(_), Value::Tuple(_)) if op == BinOp::Add => {
                Err(Error::new(span, "tuples are not added with `+`")
                    .hint("extend a tuple with `base { field = value }`"))
            }
            _ => Err(Error::new(
                span,
                format!(
                    "`{}` does not apply to {} and {}",
                    op.symbol(),
                    left.describe(),
                    right.describe()
                ),
            )),
        }
    }
}

/// Which budget ran out, for the error message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Evaluation,
    Checking,
}

/// Charges one step against a budget of EVAL_STEPS_MAX.
pub(crate) fn charge_phase(steps: &mut u64, span: Span, phase: Phase) -> Result<()> {
    *steps = steps.saturating_add(1);
    if *steps > EVAL_STEPS_MAX {
        let what = match phase {
            Phase::Evaluation => "evaluation",
            Phase::Checking => "checking",
        };
        return Err(Error::new(
            span,
            format!("{what} took more than {EVAL_STEPS_MAX} steps"),
        )
        .hint("the file builds values that are too large; simplify it"));
    }
    Ok(())
}

fn charge(steps: &mut u64, span: Span) -> Result<()> {
    charge_phase(steps, span, Phase::Evaluation)
}

fn fields_hint(t: &Tuple) -> Option<String> {
    if t.fields.is_empty() {
        return Some("the tuple is empty".into());
    }
    const SHOWN_MAX: usize = 12;
    let mut names: Vec<&str> = t.keys().take(SHOWN_MAX).collect();
    if t.fields.len() > SHOWN_MAX {
        names.push("...");
    }
    Some(format!("its fields are: {}", names.join(", ")))
}

fn index_value(base: &Value, index: &Value, span: Span) -> Result<Value> {
    match (base, index) {
        (Value::List(l), Value::Num(q)) => {
            if q.unit != Unit::Plain || q.value.fract() != 0.0 || q.value < 0.0 {
                return Err(Error::new(
                    span,
                    "a list index must be a whole number from 0",
                ));
            }
            let i = q.value as usize;
            l.items.get(i).map(|it| it.value.clone()).ok_or_else(|| {
                Error::new(
                    span,
                    format!(
                        "index {i} is past the end of a list of {} items",
                        l.items.len()
                    ),
                )
            })
        }
        (Value::Tuple(t), Value::Str(key)) => match t.get(key) {
            Some(f) => Ok(f.value.clone()),
            None => Err(Error::new(span, format!("this tuple has no field `{key}`"))
                .maybe_hint(did_you_mean(key, t.keys()).or_else(|| fields_hint(t)))),
        },
        (Value::List(_), _) => Err(Error::new(
            span,
            format!(
                "a list index must be a number, but this is {}",
                index.describe()
            ),
        )),
        (Value::Tuple(_), _) => Err(Error::new(
            span,
            format!(
                "a tuple is indexed by a field name string, but this is {}",
                index.describe()
            ),
        )),
        _ => Err(Error::new(
            span,
            format!(
                "only lists and tuples can be indexed, but this is {}",
                base.describe()
            ),
        )),
    }
}

fn numeric(op: BinOp, x: Quantity, y: Quantity, span: Span, right_span: Span) -> Result<Value> {
    let same = x.unit == y.unit;
    let mismatch = || {
        Error::new(
            span,
            format!(
                "cannot use `{}` on {} and {}",
                op.symbol(),
                x.unit.describe(),
                y.unit.describe()
            ),
        )
        .hint("give both sides the same kind of unit (a plain byte count is written with B: 512B)")
    };
    let compare = |r: bool| -> Result<Value> {
        if same {
            Ok(Value::Bool(r))
        } else {
            Err(mismatch())
        }
    };
    let q = |value: f64, unit: Unit| -> Result<Value> {
        if !value.is_finite() {
            return Err(Error::new(
                span,
                "the result of this arithmetic is too large",
            ));
        }
        Ok(Value::Num(Quantity { value, unit }))
    };
    match op {
        BinOp::Add | BinOp::Sub if !same => Err(mismatch()),
        BinOp::Add => q(x.value + y.value, x.unit),
        BinOp::Sub => q(x.value - y.value, x.unit),
        BinOp::Mul => match (x.unit, y.unit) {
            (u, Unit::Plain) | (Unit::Plain, u) => q(x.value * y.value, u),
            _ => Err(
                Error::new(span, "cannot multiply two quantities that both have units")
                    .hint("multiply by a plain number, as in 2 * 512Mi"),
            ),
        },
        BinOp::Div | BinOp::Rem if y.value == 0.0 => {
            Err(Error::new(right_span, "division by zero"))
        }
        BinOp::Div => match (x.unit, y.unit) {
            (u, Unit::Plain) => q(x.value / y.value, u),
            (a, b) if a == b => q(x.value / y.value, Unit::Plain),
            _ => Err(mismatch()),
        },
        BinOp::Rem => {
            if x.unit != Unit::Plain
                || y.unit != Unit::Plain
                || x.value.fract() != 0.0
                || y.value.fract() != 0.0
            {
                return Err(Error::new(span, "`%` needs two whole plain numbers"));
            }
            q(x.value % y.value, Unit::Plain)
        }
        BinOp::Eq => compare(x.value == y.value),
        BinOp::Ne => compare(x.value != y.value),
        BinOp::Lt => compare(x.value < y.value),
        BinOp::Le => compare(x.value <= y.value),
        BinOp::Gt => compare(x.value > y.value),
        BinOp::Ge => compare(x.value >= y.value),
        BinOp::And | BinOp::Or => Err(Error::new(
            span,
            format!("`{}` needs booleans, not numbers", op.symbol()),
        )),
    }
}

fn call(name: &str, name_span: Span, args: &[Value], span: Span) -> Result<Value> {
    let arity = |n: usize| -> Result<()> {
        if args.len() != n {
            return Err(Error::new(
                span,
                format!("`{name}` takes {n} argument, but {} were given", args.len()),
            ));
        }
        Ok(())
    };
    match name {
        "str" => {
            arity(1)?;
            match args[0].render_scalar() {
                Some(s) => Value::string(s, span),
                None => Err(Error::new(
                    span,
                    format!(
                        "str() converts a string, number or boolean, not {}",
                        args[0].describe()
                    ),
                )),
            }
        }
        "len" => {
            arity(1)?;
            let n = match &args[0] {
                Value::Str(s) => s.chars().count(),
                Value::List(l) => l.items.len(),
                Value::Tuple(t) => t.fields.len(),
                other => {
                    return Err(Error::new(
                        span,
                        format!(
                            "len() measures a string, list or tuple, not {}",
                            other.describe()
                        ),
                    ))
                }
            };
            Ok(Value::Num(Quantity::plain(n as f64)))
        }
        _ => Err(
            Error::new(name_span, format!("there is no function `{name}`")).hint(
                did_you_mean(name, BUILTINS)
                    .unwrap_or_else(|| "the builtins are str(x) and len(x)".into()),
            ),
        ),
    }
}
