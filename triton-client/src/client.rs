//! `TritonClient`: one lazily connected, pooled HTTP/2 channel to Triton's
//! gRPC port, shared by every clone, with a per-call deadline and retries
//! with exponential backoff while the server is unavailable (`retry`).

use std::collections::HashMap;
use std::time::Duration;

use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use tonic_prost::ProstCodec;

use crate::error::{from_status, CallContext, ClientError};
use crate::proto::{self, path};
use crate::retry::RetryBudget;
use crate::tensor::{InferRequest, InferResponse, ModelMetadata, OutputTensor, TensorMetadata};

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Triton's gRPC address, e.g. "http://127.0.0.1:8001".
    pub endpoint: String,
    /// Deadline of one attempt of one call (sent to Triton as grpc-timeout).
    pub request_timeout: Duration,
    /// Deadline of a whole call, every attempt and pause included: no retry starts after
    /// it, and the last attempt gets only what is left of it.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after a pause, only while Triton is unavailable (a connection lost
    /// mid-call is sent again once).
    pub max_retries: u32,
    /// Pause before the first retry; doubled each retry up to 10 s.
    pub initial_backoff: Duration,
    /// Largest message sent or received; a batch of 64 [3,256,256] FP32
    /// images is 50 MB, far above gRPC's customary 4 MB limit.
    pub max_message_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:8001".to_owned(),
            request_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_message_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Cheap to clone: clones share the channel and its connection.
#[derive(Clone, Debug)]
pub struct TritonClient {
    grpc: Grpc<Channel>,
    config: ClientConfig,
}

impl TritonClient {
    /// Builds the channel without connecting (the first call connects, and a
    /// lost connection is re-established by later calls). Must be called
    /// inside a Tokio runtime, which drives the channel.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|source| ClientError::InvalidEndpoint { endpoint: config.endpoint.clone(), source })?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            // Detects a dead server on an idle connection instead of at the next call.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let grpc = Grpc::new(endpoint.connect_lazy())
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes);
        Ok(Self { grpc, config })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A clone on the same channel whose calls make one attempt within `time_left`: a pool
    /// decides the retries itself, possibly on another endpoint.
    pub(crate) fn single_attempt(&self, time_left: Duration) -> TritonClient {
        let config = ClientConfig { call_timeout: time_left, max_retries: 0, ..self.config.clone() };
        TritonClient { grpc: self.grpc.clone(), config }
    }

    pub async fn server_live(&self) -> Result<bool, ClientError> {
        let response: proto::ServerLiveResponse =
            self.call("ServerLive", path::SERVER_LIVE, "", proto::ServerLiveRequest {}).await?;
        Ok(response.live)
    }

    pub async fn server_ready(&self) -> Result<bool, ClientError> {
        let response: proto::ServerReadyResponse =
            self.call("ServerReady", path::SERVER_READY, "", proto::ServerReadyRequest {}).await?;
        Ok(response.ready)
    }

    pub async fn model_ready(&self, model: &str) -> Result<bool, ClientError> {
        let request = proto::ModelReadyRequest { name: model.to_owned(), version: String::new() };
        let response: proto::ModelReadyResponse = self.call("ModelReady", path::MODEL_READY, model, request).await?;
        Ok(response.ready)
    }

    pub async fn model_metadata(&self, model: &str) -> Result<ModelMetadata, ClientError> {
        let request = proto::ModelMetadataRequest { name: model.to_owned(), version: String::new() };
        let response: proto::ModelMetadataResponse =
            self.call("ModelMetadata", path::MODEL_METADATA, model, request).await?;
        let convert = |tensors: Vec<proto::TensorMetadata>| {
            tensors
                .into_iter()
                .map(|tensor| TensorMetadata { name: tensor.name, datatype: tensor.datatype, shape: tensor.shape })
                .collect()
        };
        Ok(ModelMetadata {
            name: response.name,
            versions: response.versions,
            platform: response.platform,
            inputs: convert(response.inputs),
            outputs: convert(response.outputs),
        })
    }

    /// The `parameters` of a model's config (name -> `string_value`), through the
    /// ModelConfig RPC.
    pub async fn model_parameters(&self, model: &str) -> Result<HashMap<String, String>, ClientError> {
        let request = proto::ModelConfigRequest { name: model.to_owned(), version: String::new() };
        let response: proto::ModelConfigResponse = self.call("ModelConfig", path::MODEL_CONFIG, model, request).await?;
        let config = response
            .config
            .ok_or_else(|| ClientError::Protocol(format!("ModelConfig for {model:?} answered without a config")))?;
        Ok(config.parameters.into_iter().map(|(key, parameter)| (key, parameter.string_value)).collect())
    }

    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse, ClientError> {
        let message = encode_infer_request(request)?;
        let model = message.model_name.clone();
        let response: proto::ModelInferResponse = self.call("ModelInfer", path::MODEL_INFER, &model, message).await?;
        decode_infer_response(response)
    }

    /// One unary RPC with the per-attempt deadline, retried with exponential
    /// backoff while the result is retryable (`RetryBudget`).
    async fn call<Req, Resp>(
        &self,
        method: &'static str,
        path: &'static str,
        model: &str,
        message: Req,
    ) -> Result<Resp, ClientError>
    where
        Req: prost::Message + Clone + 'static,
        Resp: prost::Message + Default + 'static,
    {
        let mut budget = RetryBudget::new(&self.config);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let timeout = self.config.request_timeout.min(budget.time_left());
            let status = match self.call_once(path, message.clone(), timeout).await {
                Ok(response) => return Ok(response),
                Err(status) => status,
            };
            let context = CallContext { endpoint: &self.config.endpoint, method, model, timeout, attempts };
            let error = from_status(&status, &context);
            match budget.after(&error, false) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(error),
            }
        }
    }

    async fn call_once<Req, Resp>(&self, path: &'static str, message: Req, timeout: Duration) -> Result<Resp, Status>
    where
        Req: prost::Message + 'static,
        Resp: prost::Message + Default + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|error| Status::unavailable(format!("channel not ready: {error}")))?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        let codec = ProstCodec::<Req, Resp>::default();
        let response = grpc.unary(request, PathAndQuery::from_static(path), codec).await?;
        Ok(response.into_inner())
    }
}

fn encode_infer_request(request: InferRequest) -> Result<proto::ModelInferRequest, ClientError> {
    let mut inputs = Vec::with_capacity(request.inputs.len());
    let mut raw_input_contents = Vec::with_capacity(request.inputs.len());
    for tensor in request.inputs {
        tensor.validate()?;
        inputs.push(proto::InferInputTensor {
            name: tensor.name,
            datatype: tensor.datatype.as_str().to_owned(),
            shape: tensor.shape,
        });
        raw_input_contents.push(tensor.data);
    }
    Ok(proto::ModelInferRequest {
        model_name: request.model,
        model_version: String::new(),
        id: String::new(),
        inputs,
        outputs: request.outputs.into_iter().map(|name| proto::InferRequestedOutputTensor { name }).collect(),
        raw_input_contents,
    })
}

fn decode_infer_response(response: proto::ModelInferResponse) -> Result<InferResponse, ClientError> {
    if response.raw_output_contents.len() != response.outputs.len() {
        return Err(ClientError::Protocol(format!(
            "model {:?} answered {} outputs but {} raw contents (only raw contents are supported)",
            response.model_name,
            response.outputs.len(),
            response.raw_output_contents.len()
        )));
    }
    let outputs = response
        .outputs
        .into_iter()
        .zip(response.raw_output_contents)
        .map(|(tensor, raw)| OutputTensor { name: tensor.name, datatype: tensor.datatype, shape: tensor.shape, raw })
        .collect();
    Ok(InferResponse { model: response.model_name, outputs })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::tensor::InputTensor;

    #[test]
    fn infer_request_puts_raw_contents_in_input_order() {
        let request = InferRequest {
            model: "box_embed".into(),
            inputs: vec![
                InputTensor::uint8("original", vec![1, 2, 2, 3], vec![7u8; 12]),
                InputTensor::fp32("letterbox", vec![1, 3], &[0.5, 1.0, 2.0]),
            ],
            outputs: vec!["box_embeddings".into()],
        };
        let message = encode_infer_request(request).unwrap();
        assert_eq!(message.inputs[0].name, "original");
        assert_eq!(message.inputs[0].datatype, "UINT8");
        assert_eq!(message.inputs[1].shape, vec![1, 3]);
        assert_eq!(message.raw_input_contents[0].len(), 12);
        assert_eq!(message.raw_input_contents[1].len(), 12);
        assert_eq!(message.outputs[0].name, "box_embeddings");

        // Survives the wire: what prost encodes decodes to the same message.
        let bytes = message.encode_to_vec();
        assert_eq!(proto::ModelInferRequest::decode(bytes.as_slice()).unwrap(), message);
    }

    #[test]
    fn infer_request_rejects_a_malformed_tensor_before_sending() {
        let request = InferRequest {
            model: "clip_text".into(),
            inputs: vec![InputTensor::int64("tokens", vec![1, 77], &[0; 76])],
            outputs: vec![],
        };
        let err = encode_infer_request(request).unwrap_err();
        assert!(matches!(err, ClientError::InvalidInput { ref name, .. } if name == "tokens"), "{err}");
    }

    #[test]
    fn infer_response_pairs_outputs_with_raw_contents() {
        let embeddings: Vec<u8> = [0.6f32, 0.8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let message = proto::ModelInferResponse {
            model_name: "clip_image".into(),
            model_version: "1".into(),
            id: String::new(),
            outputs: vec![
                proto::InferOutputTensor { name: "embeddings".into(), datatype: "FP32".into(), shape: vec![1, 2] },
                proto::InferOutputTensor { name: "valid".into(), datatype: "BOOL".into(), shape: vec![1] },
            ],
            raw_output_contents: vec![embeddings.into(), vec![1u8].into()],
        };
        let decoded = proto::ModelInferResponse::decode(message.encode_to_vec().as_slice()).unwrap();
        let response = decode_infer_response(decoded).unwrap();
        assert_eq!(response.output("embeddings").unwrap().as_f32().unwrap(), vec![0.6, 0.8]);
        assert_eq!(response.output("valid").unwrap().as_bool().unwrap(), vec![true]);
    }

    #[test]
    fn infer_response_without_raw_contents_is_a_protocol_error() {
        let message = proto::ModelInferResponse {
            model_name: "clip_image".into(),
            outputs: vec![proto::InferOutputTensor {
                name: "embeddings".into(),
                datatype: "FP32".into(),
                shape: vec![1],
            }],
            ..Default::default()
        };
        assert!(matches!(decode_infer_response(message), Err(ClientError::Protocol(_))));
    }

    /// Field numbers checked against bytes laid out by hand from model_config.proto:
    /// ModelConfig name = 1, parameters = 14 (map entries: key 1, value 2), ModelParameter
    /// string_value = 1; fields the partial message does not declare are skipped.
    #[test]
    fn model_config_wire_format_matches_the_proto() {
        let config: Vec<u8> = vec![
            0x0a, 2, b'f', b'a', // 1: name
            0x20, 8, // 4: max_batch_size (not declared: skipped)
            0x72, 9, // 14: parameters entry, 9 bytes
            0x0a, 2, b'f', b's', // entry key
            0x12, 3, 0x0a, 1, b'7', // entry value: ModelParameter { string_value: "7" }
        ];
        let mut response = vec![0x0a, config.len() as u8]; // ModelConfigResponse 1: config
        response.extend(&config);
        let decoded = proto::ModelConfigResponse::decode(response.as_slice()).unwrap();
        let config = decoded.config.unwrap();
        assert_eq!(config.name, "fa");
        assert_eq!(config.parameters["fs"].string_value, "7");
        let request = proto::ModelConfigRequest { name: "fa".into(), version: "1".into() };
        assert_eq!(request.encode_to_vec(), vec![0x0a, 2, b'f', b'a', 0x12, 1, b'1']);
    }

    /// Field numbers checked against bytes laid out by hand from
    /// grpc_service.proto: model_name = 1, inputs = 5 (name 1, datatype 2,
    /// shape 3 packed), raw_input_contents = 7.
    #[test]
    fn infer_request_wire_format_matches_the_proto() {
        let message = proto::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![proto::InferInputTensor { name: "x".into(), datatype: "UINT8".into(), shape: vec![2] }],
            raw_input_contents: vec![vec![9u8, 8].into()],
            ..Default::default()
        };
        let expected: Vec<u8> = vec![
            0x0a, 1, b'm', // 1: model_name
            0x2a, 13, // 5: inputs, 13 bytes
            0x0a, 1, b'x', // 1: name
            0x12, 5, b'U', b'I', b'N', b'T', b'8', // 2: datatype
            0x1a, 1, 2, // 3: shape, packed
            0x3a, 2, 9, 8, // 7: raw_input_contents
        ];
        assert_eq!(message.encode_to_vec(), expected);
    }
}
