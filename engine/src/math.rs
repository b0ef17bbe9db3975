//! Math functions over integers as well as floats.
//!
//! A JSON `2` decodes as an integer and `2.0` as a float, and rules should not have to care
//! which one a sensor sent. Rhai's arithmetic and comparisons already mix the two, but its
//! math functions (`sqrt`, `exp`, `ln`, `floor`, ...) take floats only. This registers an
//! integer overload of each: one that converts the integer to a float and calls the float
//! version, except for rounding (`floor`, `ceiling`, `round`, `int`), which returns the
//! integer unchanged, so integers stay integers wherever they were whole already.

use rhai::{FLOAT, INT};

type Unary = fn(FLOAT) -> FLOAT;
type Binary = fn(FLOAT, FLOAT) -> FLOAT;

/// One-argument float functions, for an integer argument.
const UNARY: &[(&str, Unary)] = &[
    ("sqrt", FLOAT::sqrt),
    ("exp", FLOAT::exp),
    ("ln", FLOAT::ln),
    ("log", FLOAT::log10),
    ("sin", FLOAT::sin),
    ("cos", FLOAT::cos),
    ("tan", FLOAT::tan),
    ("asin", FLOAT::asin),
    ("acos", FLOAT::acos),
    ("atan", FLOAT::atan),
    ("sinh", FLOAT::sinh),
    ("cosh", FLOAT::cosh),
    ("tanh", FLOAT::tanh),
    ("asinh", FLOAT::asinh),
    ("acosh", FLOAT::acosh),
    ("atanh", FLOAT::atanh),
    ("to_radians", FLOAT::to_radians),
    ("to_degrees", FLOAT::to_degrees),
];

/// Two-argument float functions, for any mix of integer and float arguments.
const BINARY: &[(&str, Binary)] = &[("log", |x, base| x.log(base)), ("atan", FLOAT::atan2), ("hypot", FLOAT::hypot)];

/// Rounding functions (also properties, `x.floor`): an integer is already whole.
const WHOLE: &[&str] = &["floor", "ceiling", "round", "int"];

/// Registers the integer overloads.
pub(crate) fn register(engine: &mut rhai::Engine) {
    for &(name, f) in UNARY {
        engine.register_fn(name, move |x: INT| f(x as FLOAT));
    }
    for &(name, f) in BINARY {
        engine.register_fn(name, move |x: INT, y: INT| f(x as FLOAT, y as FLOAT));
        engine.register_fn(name, move |x: INT, y: FLOAT| f(x as FLOAT, y));
        engine.register_fn(name, move |x: FLOAT, y: INT| f(x, y as FLOAT));
    }
    for &name in WHOLE {
        engine.register_fn(name, |x: INT| x);
        engine.register_get(name, |x: &mut INT| *x);
    }
    engine.register_fn("fraction", |_: INT| 0 as INT);
    engine.register_get("fraction", |_: &mut INT| 0 as INT);
    for (name, answer) in [("is_nan", false), ("is_finite", true), ("is_infinite", false)] {
        engine.register_fn(name, move |_: INT| answer);
        engine.register_get(name, move |_: &mut INT| answer);
    }
}
