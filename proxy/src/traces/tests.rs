use super::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn sent(trace: &Trace, incoming: &HeaderMap) -> HeaderMap {
    let mut out = incoming.clone();
    trace.propagate(&mut out);
    out
}

#[test]
fn a_trusted_parent_is_continued_and_decides_sampling() {
    let incoming = headers(&[("traceparent", PARENT), ("tracestate", "vendor=1")]);
    let trace = Sampler::new(0.0).begin(&incoming, true);
    let context = trace.context().unwrap();
    assert_eq!(context.trace_id, TRACE);
    assert_eq!(
        context.parent_id,
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );
    assert!(context.sampled, "the parent sampled it, whatever the ratio");
    assert!(trace.recording());
    let out = sent(&trace, &incoming);
    let parent = traceparent::parse(out[TRACEPARENT].as_bytes()).unwrap();
    assert_eq!(parent.trace_id, TRACE);
    assert_eq!(
        parent.parent_id, context.span_id,
        "sekisho's span is the parent"
    );
    assert!(parent.sampled());
    assert_eq!(out[TRACESTATE], "vendor=1");

    let unsampled = PARENT.replace("-01", "-00");
    let trace = Sampler::new(1.0).begin(&headers(&[("traceparent", &unsampled)]), true);
    assert!(!trace.context().unwrap().sampled);
    assert!(!trace.recording());
}

#[test]
fn an_untrusted_or_malformed_parent_starts_a_new_trace_and_is_not_passed_on() {
    let malformed = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    for (incoming, trusted) in [
        (
            headers(&[("traceparent", PARENT), ("tracestate", "a=b")]),
            false,
        ),
        (
            headers(&[("traceparent", malformed), ("tracestate", "a=b")]),
            true,
        ),
        (
            headers(&[("traceparent", PARENT), ("traceparent", PARENT)]),
            true,
        ),
    ] {
        let trace = Sampler::new(1.0).begin(&incoming, trusted);
        let context = trace.context().unwrap();
        assert_ne!(context.trace_id, TRACE, "{incoming:?}");
        assert_eq!(context.parent_id, None);
        let out = sent(&trace, &incoming);
        assert_eq!(out.get_all(TRACEPARENT).iter().count(), 1);
        let parent = traceparent::parse(out[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(parent.trace_id, context.trace_id);
        assert_eq!(parent.parent_id, context.span_id);
        assert!(out.get(TRACESTATE).is_none(), "{out:?}");
    }
}

#[test]
fn with_tracing_off_trace_headers_pass_only_from_a_trusted_proxy() {
    let incoming = headers(&[("traceparent", PARENT), ("tracestate", "a=b")]);
    let out = sent(&Trace::off(&incoming, false), &incoming);
    assert!(out.get(TRACEPARENT).is_none() && out.get(TRACESTATE).is_none());
    let out = sent(&Trace::off(&incoming, true), &incoming);
    assert_eq!(out[TRACEPARENT], PARENT);
    assert_eq!(out[TRACESTATE], "a=b");
    // Even from a trusted proxy, a malformed traceparent never passes as it is.
    let malformed = headers(&[("traceparent", "00-zz"), ("tracestate", "a=b")]);
    let out = sent(&Trace::off(&malformed, true), &malformed);
    assert!(out.get(TRACEPARENT).is_none() && out.get(TRACESTATE).is_none());
    assert!(Trace::default().context().is_none());
}

#[test]
fn unsampled_traces_record_nothing_but_still_send_their_ids() {
    let mut trace = Sampler::new(0.0).begin(&HeaderMap::new(), false);
    let mut called = false;
    trace.event("phase", || {
        called = true;
        Vec::new()
    });
    assert!(!called, "attributes are not even made");
    assert!(!trace.recording());
    let out = sent(&trace, &HeaderMap::new());
    assert!(out[TRACEPARENT].as_bytes().ends_with(b"-00"));
}

#[test]
fn the_ratio_samples_about_that_share_of_new_traces() {
    assert_eq!(threshold(0.0), 0);
    assert_eq!(threshold(1.0), 1 << 56);
    let sampler = Sampler::new(0.25);
    let sampled = (0..4000)
        .filter(|_| sampler.begin(&HeaderMap::new(), false).recording())
        .count();
    assert!((800..1200).contains(&sampled), "{sampled} of 4000");
    let mut id = [0u8; 16];
    assert!(sample(&id, 1));
    id[9] = 0x80;
    assert!(!sample(&id, 1 << 55));
    id[0] = 0xff;
    id[9] = 0x7f;
    assert!(sample(&id, 1 << 55), "only the low 56 bits count");
}

#[test]
fn spans_are_named_by_method_and_route_never_by_path() {
    assert_eq!(method_name(&Method::GET), "GET");
    assert_eq!(method_name(&Method::from_bytes(b"BREW").unwrap()), "_OTHER");
    assert_eq!(protocol_version(Version::HTTP_2), "2");
    assert_eq!(protocol_version(Version::HTTP_11), "1.1");
}
