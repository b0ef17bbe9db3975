//! The console's requests, routed: the page and its assets, the OpenAPI document, and each
//! operation of `/api/v1` by method and path, after its token is checked. Matched by hand
//! (see `crate::server`), with 405 and `Allow` for a known path and another method.

use super::Api;
use super::answer::{Answer, Refusal, allowed, bad, fail};
use super::api::{backtest, dead_letters, events, history, reload, stream};
use super::auth::Need;
use super::live::{alarm_command, alarms, device, devices, rule, rules};
use crate::server::{Response, respond};
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The OpenAPI 3 document of this API (gzip); a test checks every response against it.
const OPENAPI: Packed = Packed(include_bytes!(concat!(env!("OUT_DIR"), "/openapi.json.gz")), "application/json");
/// Largest request body (an alarm command, a reload's `by`, a backtest's rule file).
const MAX_BODY: usize = 64 * 1024;

/// The page and its assets, embedded (gzip, by `build.rs`): the console works with the gateway
/// offline.
const INDEX: Packed = Packed(include_bytes!(concat!(env!("OUT_DIR"), "/index.html.gz")), "text/html; charset=utf-8");
const SCRIPT: Packed = Packed(include_bytes!(concat!(env!("OUT_DIR"), "/app.js.gz")), "text/javascript; charset=utf-8");
const STYLE: Packed = Packed(include_bytes!(concat!(env!("OUT_DIR"), "/app.css.gz")), "text/css; charset=utf-8");
const ICON: Packed = Packed(include_bytes!(concat!(env!("OUT_DIR"), "/favicon.svg.gz")), "image/svg+xml");

/// An embedded document as one gzip member (`build.rs` writes it), and its content type.
#[derive(Clone, Copy)]
struct Packed(&'static [u8], &'static str);

impl Packed {
    /// The document as sent to a client that accepts gzip or not (`accept`: its
    /// `Accept-Encoding`): the stored bytes, or inflated once more for this answer.
    fn response(self, accept: Option<&HeaderValue>) -> Response {
        let mut r = if takes_gzip(accept) {
            let mut r = respond(200, self.1, Bytes::from_static(self.0));
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            respond(200, self.1, self.text())
        };
        r.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        r
    }

    /// The document itself. The member's header is the fixed 10 bytes `build.rs` writes and
    /// its trailer 8 (CRC-32, length); between them is the deflate stream.
    fn text(self) -> Vec<u8> {
        let stream = self.0.get(10..self.0.len().saturating_sub(8)).unwrap_or_default();
        // Built from this crate's own files and checked by a test: it cannot fail to inflate.
        miniz_oxide::inflate::decompress_to_vec(stream).unwrap_or_default()
    }
}

/// The OpenAPI document, as text (for tests and tools that read it without HTTP).
pub fn openapi() -> String {
    String::from_utf8(OPENAPI.text()).unwrap_or_default()
}

/// Whether `Accept-Encoding` lets gzip through (RFC 9110, 12.5.3): named, or `*`, with a
/// non-zero weight. No header at all means no preference, but curl and wget send none and
/// print what they get: they get the text.
fn takes_gzip(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else { return false };
    accept.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let refused = parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().map_or(true, |q| q <= 0.0)));
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// The page's policy: its own script and style only (no inline code), data from this origin.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                           connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

impl crate::server::Handler for Api {
    fn handle(self: Arc<Self>, request: crate::server::Request) -> crate::server::Reply {
        Box::pin(async move {
            let mut response = route(&self, request).await.unwrap_or_else(Refusal::into_response);
            secure(response.headers_mut());
            response
        })
    }
}

/// What a path does, by method: the operation, or the methods it takes.
enum Route<'a> {
    Page(Packed),
    OpenApi,
    Rules,
    Rule(&'a str),
    Devices,
    Device(&'a str),
    Alarms,
    AlarmCommand(&'a str, &'a str),
    Events,
    DeadLetters,
    History(&'a str, &'a str),
    Stream,
    Reload,
    Backtest,
    /// A known path, another method: these are the ones it takes.
    Wrong(&'static str),
}

/// The route of `method` on `segments` (the path after `/api/v1/`, split and decoded);
/// `None`: no such path.
fn api_route<'a>(method: &Method, segments: &[&'a str]) -> Option<Route<'a>> {
    let get = method == Method::GET;
    let post = method == Method::POST;
    let r = match (segments, get, post) {
        (["openapi.json"], true, _) => Route::OpenApi,
        (["rules"], true, _) => Route::Rules,
        (["rules", name], true, _) => Route::Rule(name),
        (["devices"], true, _) => Route::Devices,
        (["devices", key], true, _) => Route::Device(key),
        (["alarms"], true, _) => Route::Alarms,
        (["alarms", rule, key], _, true) => Route::AlarmCommand(rule, key),
        (["events"], true, _) => Route::Events,
        (["deadletters"], true, _) => Route::DeadLetters,
        (["history", key, field], true, _) => Route::History(key, field),
        (["stream"], true, _) => Route::Stream,
        (["reload"], _, true) => Route::Reload,
        (["backtest"], _, true) => Route::Backtest,
        (["openapi.json" | "rules" | "devices" | "alarms" | "events" | "deadletters" | "stream"], ..)
        | (["rules" | "devices", _], ..)
        | (["history", _, _], ..) => Route::Wrong("GET"),
        (["alarms", _, _] | ["reload"] | ["backtest"], ..) => Route::Wrong("POST"),
        _ => return None,
    };
    Some(r)
}

/// Answers one request: the page and its assets, or an API operation.
async fn route(api: &Api, request: crate::server::Request) -> Answer {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let page = match path.as_str() {
        "/" => Some(Route::Page(INDEX)),
        "/app.js" => Some(Route::Page(SCRIPT)),
        "/app.css" => Some(Route::Page(STYLE)),
        "/favicon.svg" => Some(Route::Page(ICON)),
        _ => None,
    };
    let segments: Vec<String> = match path.strip_prefix("/api/v1/") {
        Some(rest) if page.is_none() => rest.split('/').map(decode).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let found = match page {
        Some(Route::Page(..)) if method != Method::GET => Some(Route::Wrong("GET")),
        Some(page) => Some(page),
        None if path.starts_with("/api/v1/") => api_route(&method, &segments),
        None => None,
    };
    let Some(found) = found else {
        return Err(fail(StatusCode::NOT_FOUND, "no such endpoint (see /api/v1/openapi.json)"));
    };
    let need = match found {
        Route::Page(..) | Route::OpenApi | Route::Wrong(_) => None,
        Route::AlarmCommand(..) | Route::Reload | Route::Backtest => Some(Need::Write),
        _ => Some(Need::Read),
    };
    if let Some(need) = need {
        allowed(api, request.headers(), need)?;
    }
    let q = request.uri().query().unwrap_or("").to_owned();
    let accept = request.headers().get(header::ACCEPT_ENCODING).cloned();
    let accept = accept.as_ref();
    match found {
        Route::Page(page) => {
            let mut r = page.response(accept);
            r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
            Ok(r)
        }
        Route::OpenApi => Ok(OPENAPI.response(accept)),
        Route::Rules => rules(api).await,
        Route::Rule(name) => rule(api, name).await,
        Route::Devices => devices(api, params(&q, &["state", "q"])?).await,
        Route::Device(key) => device(api, key).await,
        Route::Alarms => alarms(api).await,
        Route::Events => events(api, params(&q, &["since", "rule", "key", "limit"])?).await,
        Route::DeadLetters => dead_letters(api),
        Route::History(key, field) => history(api, (key, field), params(&q, &["since", "until", "resolution"])?).await,
        Route::Stream => stream(api),
        Route::AlarmCommand(rule, key) => {
            let (rule, key) = (rule.to_owned(), key.to_owned());
            alarm_command(api, (rule, key), read_body(request).await?).await
        }
        Route::Reload => reload(api, read_body(request).await?),
        Route::Backtest => backtest(api, read_body(request).await?).await,
        Route::Wrong(allow) => {
            let mut r = fail(StatusCode::METHOD_NOT_ALLOWED, format!("{allow} only")).into_response();
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            Ok(r)
        }
    }
}

/// A path segment, percent-decoded.
fn decode(segment: &str) -> Result<String, Refusal> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad("a path segment is not UTF-8 once decoded"))
}

/// The query string's arguments, each one of `known` at most once.
fn params(query: &str, known: &[&str]) -> Result<BTreeMap<String, String>, Refusal> {
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !known.contains(&&*k) {
            let k: String = k.chars().take(32).collect();
            return Err(bad(format!("unknown argument `{k}` (this endpoint takes {})", known.join(", "))));
        }
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(bad(format!("`{k}` is given twice")));
        }
    }
    Ok(out)
}

/// The request body, up to [`MAX_BODY`].
async fn read_body(request: crate::server::Request) -> Result<Bytes, Refusal> {
    crate::server::body(request, MAX_BODY)
        .await
        .ok_or_else(|| fail(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {MAX_BODY} bytes")))
}

/// Headers on every answer: JSON is never sniffed as something else, nothing is cached (it
/// may be private), nothing may frame it or load from elsewhere.
fn secure(h: &mut HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `build.rs` embeds inflates back to the files in `src/console/`, byte for byte.
    #[test]
    fn embedded_documents_are_the_sources() {
        for (packed, source) in [
            (INDEX, include_str!("assets/index.html")),
            (SCRIPT, include_str!("assets/app.js")),
            (STYLE, include_str!("assets/app.css")),
            (ICON, include_str!("assets/favicon.svg")),
            (OPENAPI, include_str!("openapi.json")),
        ] {
            assert_eq!(packed.text(), source.as_bytes(), "{}", packed.1);
            assert!(packed.0.len() < source.len(), "{} is stored compressed", packed.1);
        }
        assert_eq!(openapi(), include_str!("openapi.json"));
    }

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        let takes = |v: &str| takes_gzip(Some(&HeaderValue::from_str(v).expect("a header value")));
        assert!(!takes_gzip(None), "curl and wget send no Accept-Encoding and get the text");
        for yes in ["gzip", "gzip, deflate, br, zstd", "br;q=1.0, GZIP;q=0.5", "*", "identity, *;q=0.1"] {
            assert!(takes(yes), "{yes}");
        }
        for no in ["identity", "br, deflate", "gzip;q=0", "gzip; q=0.0", "*;q=0", "gzip;q=x", "gzipped"] {
            assert!(!takes(no), "{no}");
        }
    }

    #[test]
    fn an_asset_answers_gzip_or_text_by_the_request() {
        let gz = INDEX.response(Some(&HeaderValue::from_static("gzip, deflate")));
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(gz.headers()[header::VARY], "accept-encoding");
        let plain = INDEX.response(None);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    }
}
