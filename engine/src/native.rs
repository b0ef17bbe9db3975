//! Native predicates: simple Rhai closures evaluated in Rust.
//!
//! Most rule predicates are comparisons of event fields with constants:
//! `|e| e.value > 80.0`, `|e| e.levels[2] == "open" && e.payload.battery < LIMIT`. Such a
//! closure is recognised once, from its AST, and evaluated here without building the event
//! map or entering the interpreter: about twenty times cheaper. Anything this module does
//! not fully understand (a function call, a mutable captured variable, values of types it
//! does not compare) falls back to Rhai, so the result is always what Rhai would say; a
//! differential property test holds the two to that.

use rhai::{AST, ASTFlags, ASTNode, Dynamic, Expr, FnCallExpr, FnPtr, ImmutableString, Module, Stmt};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What a predicate reads.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Int(i64),
    Float(f64),
    Str(ImmutableString),
    Bool(bool),
    /// `e.value`, `e.time`, `e.topic`, `e.<name>` (a topic level or nothing).
    Field(ImmutableString),
    /// `e.levels[i]`.
    Level(usize),
    /// `e.payload.a.b...`.
    Payload(Vec<ImmutableString>),
    /// `e.window.<aggregate>`.
    Window(ImmutableString),
}

/// A recognised predicate.
#[derive(Debug, Clone)]
pub(crate) enum Pred {
    Cmp(Op, Operand, Operand),
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    Const(bool),
}

/// What a predicate reads from: the event, without building its map.
#[derive(Debug)]
pub(crate) struct View<'a> {
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a Dynamic,
    pub(crate) time: i64,
    pub(crate) captures: &'a [(&'a str, &'a str)],
    /// A window rule's aggregates (`e.window`).
    pub(crate) window: Option<&'a Aggregates>,
}

/// A window's aggregates, as `e.window` shows them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Aggregates {
    pub(crate) count: i64,
    pub(crate) sum: f64,
    pub(crate) avg: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    /// Sample variance and standard deviation; `None` below two events.
    pub(crate) variance: Option<f64>,
    pub(crate) stddev: Option<f64>,
    pub(crate) first: Option<f64>,
    pub(crate) last: Option<f64>,
    /// Change per second from the first to the last value.
    pub(crate) rate: Option<f64>,
    pub(crate) span_ms: i64,
    /// Tumbling windows: where the window starts and ends.
    pub(crate) bounds: Option<(i64, i64)>,
}

impl Aggregates {
    fn get(&self, name: &str) -> Val<'static> {
        let f = |x: Option<f64>| x.map(Val::Float).unwrap_or(Val::Other);
        match name {
            "count" => Val::Int(self.count),
            "sum" => Val::Float(self.sum),
            "avg" => f(self.avg),
            "min" => f(self.min),
            "max" => f(self.max),
            "variance" => f(self.variance),
            "stddev" => f(self.stddev),
            "first" => f(self.first),
            "last" => f(self.last),
            "rate" => f(self.rate),
            "span_ms" => Val::Int(self.span_ms),
            "start" => self.bounds.map(|b| Val::Int(b.0)).unwrap_or(Val::Other),
            "end" => self.bounds.map(|b| Val::Int(b.1)).unwrap_or(Val::Other),
            _ => Val::Other,
        }
    }

    /// What a window rule without `emit` emits: the aggregates it always emitted (`variance`
    /// and `stddev` came later, and are left out so existing outputs do not change).
    pub(crate) fn to_data(self) -> Dynamic {
        Dynamic::from_map(self.map())
    }

    /// `e.window`: every aggregate, and `before`, the window without the current event.
    pub(crate) fn to_dynamic(self, before: Option<&Aggregates>) -> Dynamic {
        let mut m = self.map();
        let f = |x: Option<f64>| x.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
        m.insert("variance".into(), f(self.variance));
        m.insert("stddev".into(), f(self.stddev));
        if let Some(b) = before {
            m.insert("before".into(), b.to_dynamic(None));
        }
        Dynamic::from_map(m)
    }

    fn map(self) -> rhai::Map {
        let mut m = rhai::Map::new();
        let f = |x: Option<f64>| x.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
        m.insert("count".into(), Dynamic::from_int(self.count));
        m.insert("sum".into(), Dynamic::from_float(self.sum));
        m.insert("avg".into(), f(self.avg));
        m.insert("min".into(), f(self.min));
        m.insert("max".into(), f(self.max));
        m.insert("first".into(), f(self.first));
        m.insert("last".into(), f(self.last));
        m.insert("rate".into(), f(self.rate));
        m.insert("span_ms".into(), Dynamic::from_int(self.span_ms));
        if let Some((s, e)) = self.bounds {
            m.insert("start".into(), Dynamic::from_int(s));
            m.insert("end".into(), Dynamic::from_int(e));
        }
        m
    }
}

/// A value as read, borrowed where it can be.
#[derive(Debug, Clone)]
enum Val<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// A string from the payload (a cheap reference-counted clone).
    Owned(ImmutableString),
    Bool(bool),
    /// Anything else (unit, maps, arrays...): Rhai decides.
    Other,
}

impl Val<'_> {
    fn text(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Owned(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

impl Pred {
    /// Recognises `f` if it is a one-parameter script closure of `ast` whose body is a
    /// predicate this module understands.
    pub(crate) fn compile(f: &FnPtr, ast: &AST) -> Option<Pred> {
        let curry = f.curry();
        let def = ast.shared_lib().get_script_fn(f.fn_name(), curry.len() + 1)?;
        // Captured constants: only values that cannot change (not shared).
        let mut consts: Vec<(ImmutableString, Dynamic)> = Vec::with_capacity(curry.len());
        for (name, v) in def.params.iter().zip(curry) {
            if v.is_shared() {
                return None;
            }
            consts.push((name.clone(), v.clone()));
        }
        let param = def.params.last()?.clone();
        let cx = Compile { param, consts };
        // The body is reached by walking an AST that holds just this function: its top-level
        // nodes are the body's statements.
        let mut module = Module::new();
        module.set_script_fn(def.clone());
        let single = AST::new_from_module(module);
        let (mut statements, mut pred) = (0, None);
        single.walk(&mut |path: &[ASTNode<'_>]| {
            if let [ASTNode::Stmt(stmt)] = path {
                statements += 1;
                pred = match stmt {
                    Stmt::Expr(e) => cx.pred(e),
                    Stmt::FnCall(call, _) => cx.call(call),
                    _ => None,
                };
            }
            true
        });
        if statements == 1 { pred } else { None }
    }

    /// Whether evaluating on `v` reads `e.value`, short-circuiting as [`Pred::eval`] does:
    /// `e.levels[2] == "status" && e.value == "offline"` does not read it on a heartbeat.
    /// Asked only when the predicate did not hold and the event has no value.
    pub(crate) fn reads_value(&self, v: &View<'_>) -> bool {
        let is_value = |o: &Operand| matches!(o, Operand::Field(n) if n == "value");
        match self {
            Pred::Const(_) => false,
            Pred::Not(p) => p.reads_value(v),
            Pred::And(ps) | Pred::Or(ps) => {
                // An `and` goes on while its parts hold, an `or` while they do not.
                let goes_on_when = matches!(self, Pred::And(_));
                for p in ps {
                    if p.reads_value(v) {
                        return true;
                    }
                    if p.eval(v) != Some(goes_on_when) {
                        return false;
                    }
                }
                false
            }
            Pred::Cmp(_, a, b) => is_value(a) || is_value(b),
        }
    }

    /// Evaluates; `None` means "ask Rhai" (a type this module does not compare).
    pub(crate) fn eval(&self, v: &View<'_>) -> Option<bool> {
        match self {
            Pred::Const(b) => Some(*b),
            Pred::Not(p) => p.eval(v).map(|b| !b),
            Pred::And(ps) => {
                for p in ps {
                    if !p.eval(v)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            Pred::Or(ps) => {
                for p in ps {
                    if p.eval(v)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            Pred::Cmp(op, a, b) => compare(*op, read(a, v), read(b, v)),
        }
    }
}

struct Compile {
    /// The closure's own parameter (`e`).
    param: ImmutableString,
    /// Curried constants by name.
    consts: Vec<(ImmutableString, Dynamic)>,
}

impl Compile {
    fn pred(&self, e: &Expr) -> Option<Pred> {
        match e {
            Expr::BoolConstant(b, _) => Some(Pred::Const(*b)),
            Expr::And(parts, _) => parts.iter().map(|p| self.pred(p)).collect::<Option<_>>().map(Pred::And),
            Expr::Or(parts, _) => parts.iter().map(|p| self.pred(p)).collect::<Option<_>>().map(Pred::Or),
            Expr::FnCall(call, _) => self.call(call),
            Expr::Stmt(block) => match block.statements() {
                [Stmt::Expr(e)] => self.pred(e),
                [Stmt::FnCall(call, _)] => self.call(call),
                _ => None,
            },
            _ => None,
        }
    }

    fn call(&self, call: &FnCallExpr) -> Option<Pred> {
        call.op_token.as_ref()?;
        let name = call.name.as_str();
        match (name, call.args.as_slice()) {
            ("!", [x]) => self.pred(x).map(|p| Pred::Not(Box::new(p))),
            (_, [a, b]) => {
                let op = match name {
                    "==" => Op::Eq,
                    "!=" => Op::Ne,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    _ => return None,
                };
                Some(Pred::Cmp(op, self.operand(a)?, self.operand(b)?))
            }
            _ => None,
        }
    }

    fn operand(&self, e: &Expr) -> Option<Operand> {
        match e {
            Expr::IntegerConstant(i, _) => Some(Operand::Int(*i)),
            Expr::FloatConstant(f, _) => Some(Operand::Float(**f)),
            Expr::StringConstant(s, _) => Some(Operand::Str(s.clone())),
            Expr::BoolConstant(b, _) => Some(Operand::Bool(*b)),
            Expr::Variable(v, _, _) => {
                // rhai's `no_module`: a variable has no namespace (`a::b`) to rule out.
                let (_, name) = &**v;
                let value = &self.consts.iter().find(|(n, _)| n == name)?.1;
                if let Ok(i) = value.as_int() {
                    Some(Operand::Int(i))
                } else if let Ok(f) = value.as_float() {
                    Some(Operand::Float(f))
                } else if let Ok(b) = value.as_bool() {
                    Some(Operand::Bool(b))
                } else if value.is_string() {
                    Some(Operand::Str(value.clone().into_immutable_string().ok()?))
                } else {
                    None
                }
            }
            Expr::Dot(bin, flags, _) => {
                if !flags.is_empty() && flags.contains(ASTFlags::NEGATED) {
                    return None;
                }
                if !self.is_param(&bin.lhs) {
                    return None;
                }
                self.path(&bin.rhs)
            }
            _ => None,
        }
    }

    fn is_param(&self, e: &Expr) -> bool {
        matches!(e, Expr::Variable(v, _, _) if v.1 == self.param)
    }

    /// The part after `e.`.
    fn path(&self, e: &Expr) -> Option<Operand> {
        match e {
            Expr::Property(p, _) => {
                let name = &p.2;
                Some(match name.as_str() {
                    "payload" => Operand::Payload(Vec::new()),
                    "levels" => return None,
                    _ => Operand::Field(name.clone()),
                })
            }
            Expr::Index(bin, flags, _) => {
                if flags.contains(ASTFlags::NEGATED) {
                    return None;
                }
                match (&bin.lhs, &bin.rhs) {
                    (Expr::Property(p, _), Expr::IntegerConstant(i, _)) if p.2.as_str() == "levels" => {
                        usize::try_from(*i).ok().map(Operand::Level)
                    }
                    _ => None,
                }
            }
            Expr::Dot(bin, flags, _) => {
                if flags.contains(ASTFlags::NEGATED) {
                    return None;
                }
                let Expr::Property(head, _) = &bin.lhs else { return None };
                if head.2.as_str() == "window" {
                    return match &bin.rhs {
                        Expr::Property(p, _) => Some(Operand::Window(p.2.clone())),
                        _ => None,
                    };
                }
                if head.2.as_str() != "payload" {
                    return None;
                }
                let mut fields = Vec::new();
                let mut rest = &bin.rhs;
                loop {
                    match rest {
                        Expr::Property(p, _) => {
                            fields.push(p.2.clone());
                            return Some(Operand::Payload(fields));
                        }
                        Expr::Dot(b, f, _) if !f.contains(ASTFlags::NEGATED) => {
                            let Expr::Property(p, _) = &b.lhs else { return None };
                            fields.push(p.2.clone());
                            rest = &b.rhs;
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

fn val(d: &Dynamic) -> Val<'static> {
    if let Ok(i) = d.as_int() {
        Val::Int(i)
    } else if let Ok(f) = d.as_float() {
        Val::Float(f)
    } else if let Ok(b) = d.as_bool() {
        Val::Bool(b)
    } else if d.is_string() && !d.is_shared() {
        d.clone().into_immutable_string().map(Val::Owned).unwrap_or(Val::Other)
    } else {
        Val::Other
    }
}

/// What an operand reads.
fn read<'a>(o: &'a Operand, v: &View<'a>) -> Val<'a> {
    match o {
        Operand::Int(i) => Val::Int(*i),
        Operand::Float(f) => Val::Float(*f),
        Operand::Str(s) => Val::Str(s.as_str()),
        Operand::Bool(b) => Val::Bool(*b),
        Operand::Level(i) => v.topic.split('/').nth(*i).map(Val::Str).unwrap_or(Val::Other),
        Operand::Field(name) => match name.as_str() {
            "time" => Val::Int(v.time),
            "topic" => Val::Str(v.topic),
            "value" => value_of(v),
            n => match v.captures.iter().find(|(c, _)| *c == n) {
                Some((_, s)) => Val::Str(s),
                None => Val::Other,
            },
        },
        Operand::Payload(path) => {
            if path.is_empty() {
                return scalar(v.payload);
            }
            payload_path(v.payload, path)
        }
        Operand::Window(name) => v.window.map(|w| w.get(name)).unwrap_or(Val::Other),
    }
}

/// `e.value`: the scalar payload, else its `value` field, else the field named like the
/// topic's last level (the same rule as the event map's).
fn value_of<'a>(v: &View<'a>) -> Val<'a> {
    match v.payload.as_map_ref() {
        Ok(map) => {
            let last = v.topic.rsplit('/').next().unwrap_or("");
            map.get("value").or_else(|| map.get(last)).map(val).unwrap_or(Val::Other)
        }
        Err(_) => val(v.payload),
    }
}

fn scalar(d: &Dynamic) -> Val<'static> {
    val(d)
}

/// A value from nested maps.
fn payload_path(d: &Dynamic, path: &[ImmutableString]) -> Val<'static> {
    let Ok(map) = d.as_map_ref() else { return Val::Other };
    let Some(next) = map.get(path[0].as_str()) else { return Val::Other };
    if path.len() == 1 {
        return scalar(next);
    }
    payload_path(next, &path[1..])
}

fn compare(op: Op, a: Val<'_>, b: Val<'_>) -> Option<bool> {
    // Rhai compares strings with `==`/`!=`/`<`... lexicographically, like Rust.
    use std::cmp::Ordering;
    let ord: Ordering = match (a, b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(&y),
        (Val::Int(x), Val::Float(y)) => (x as f64).partial_cmp(&y)?,
        (Val::Float(x), Val::Int(y)) => x.partial_cmp(&(y as f64))?,
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(&y)?,
        (Val::Bool(x), Val::Bool(y)) if matches!(op, Op::Eq | Op::Ne) => x.cmp(&y),
        (x, y) => match (x.text(), y.text()) {
            (Some(x), Some(y)) => x.cmp(y),
            _ => return None,
        },
    };
    Some(match op {
        Op::Eq => ord.is_eq(),
        Op::Ne => ord.is_ne(),
        Op::Lt => ord.is_lt(),
        Op::Le => ord.is_le(),
        Op::Gt => ord.is_gt(),
        Op::Ge => ord.is_ge(),
    })
}
