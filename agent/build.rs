//! Compresses the console's page, its assets and its OpenAPI document into `OUT_DIR` as gzip
//! members, which `console::route` embeds: browsers take them as they are (`Content-Encoding:
//! gzip`), and the few clients that do not accept gzip get them inflated on the way out. 48 KB of
//! text become 12 KB in the gateway binary. The sources in `src/console/` stay the truth; no
//! JavaScript tool is involved.
//!
//! The gzip framing (RFC 1952) is written here by hand: a fixed 10-byte header, the deflate
//! stream from miniz_oxide, and the CRC-32 and length. It is a dozen lines, and `route::Packed`
//! reads back exactly this header; a crate for it would be a build dependency for no gain.

use std::path::Path;

const FILES: &[&str] = &["assets/index.html", "assets/app.js", "assets/app.css", "assets/favicon.svg", "openapi.json"];

fn main() {
    let out = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    for file in FILES {
        let source = Path::new("src/console").join(file);
        println!("cargo:rerun-if-changed={}", source.display());
        let text = std::fs::read(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        let name = Path::new(file).file_name().and_then(|n| n.to_str()).expect("a file name");
        let target = Path::new(&out).join(format!("{name}.gz"));
        std::fs::write(&target, gzip(&text)).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
    }
}

/// `data` as one gzip member: no name, no time (the build stays reproducible), OS unknown.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 10));
    out.extend(crc32fast::hash(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}
