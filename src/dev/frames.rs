//! The dev sample CheckRequests as protobuf, framed for gRPC over HTTP/2, so a
//! raw HTTP/2 load generator (`h2load -d NAME.bin`) can post them as they are.

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::Message;

/// The same CheckRequest as [`super::check_request_json`], built as a message.
pub fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let map = [(":authority", "api.local"), (":method", method), (":path", path)]
        .into_iter()
        .chain(headers.iter().copied())
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let http = HttpRequest {
        method: method.into(),
        path: path.into(),
        host: "api.local".into(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        headers: map,
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

/// One gRPC length-prefixed message: flag 0 (uncompressed), the 4-byte
/// big-endian length, then the protobuf bytes.
pub fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let length = u32::try_from(body.len()).expect("a dev sample fits a gRPC frame");
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message inside a frame, checking the prefix on the way.
    fn unframe(frame: &[u8]) -> CheckRequest {
        assert_eq!(frame[0], 0, "uncompressed");
        let length = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 5, "the prefix holds the message length");
        CheckRequest::decode(&frame[5..]).unwrap()
    }

    #[test]
    fn the_frame_decodes_to_the_same_request_as_the_json() {
        // A token long enough that the length needs more than one byte of the prefix.
        let bearer = format!("Bearer {}", "a".repeat(1000));
        let headers = [("authorization", bearer.as_str()), ("x-hasura-role", "editor")];
        let frame = grpc_frame(&check_request("POST", "/v1/graphql", &headers));
        assert!(frame.len() > 1005 && frame[3] > 0, "{:?}", &frame[..5]);
        let decoded = unframe(&frame);
        let json: serde_json::Value =
            serde_json::from_str(&super::super::check_request_json("POST", "/v1/graphql", &headers)).unwrap();
        let expected = &json["attributes"]["request"]["http"];
        let http = decoded.attributes.unwrap().request.unwrap().http.unwrap();
        for (field, value) in [
            ("method", &http.method),
            ("path", &http.path),
            ("host", &http.host),
            ("scheme", &http.scheme),
            ("protocol", &http.protocol),
        ] {
            assert_eq!(expected[field], value.as_str(), "{field}");
        }
        let expected_headers: std::collections::HashMap<String, String> =
            serde_json::from_value(expected["headers"].clone()).unwrap();
        assert_eq!(http.headers, expected_headers);
        assert_eq!(expected.as_object().unwrap().len(), 6, "every JSON field is compared");
    }

    #[test]
    fn an_empty_message_is_a_bare_prefix() {
        assert_eq!(grpc_frame(&CheckRequest::default()), [0, 0, 0, 0, 0]);
    }
}
