//! Tensors as they travel in `raw_input_contents` / `raw_output_contents`:
//! flat, row-major, little-endian bytes plus a KServe datatype name and shape.
//!
//! Inputs are built from typed slices; outputs are read back into typed
//! vectors after checking the datatype and that the byte length matches the
//! shape, so a model that answers with the wrong type or size is an error
//! rather than silently misread numbers.

use bytes::Bytes;

use crate::error::ClientError;

/// KServe v2 tensor datatypes (the names Triton uses on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    /// Length-prefixed byte strings; no fixed element size.
    Bytes,
}

impl DataType {
    const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// The wire name parsed back; `None` for a name KServe does not define.
    pub fn from_wire(name: &str) -> Option<DataType> {
        Self::ALL.into_iter().find(|dtype| dtype.as_str() == name)
    }

    /// Bytes per element in raw form; `None` for `BYTES`, whose elements
    /// carry their own 4-byte length prefix.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of elements a shape holds; `None` for a negative (variable)
/// dimension or an overflowing product.
pub(crate) fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |count, &dim| {
        let dim = usize::try_from(dim).ok()?;
        count.checked_mul(dim)
    })
}

/// One input of an inference request.
#[derive(Clone, Debug, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub datatype: DataType,
    /// Full shape including the batch dimension when the model batches.
    pub shape: Vec<i64>,
    /// Raw little-endian elements, row-major.
    pub data: Bytes,
}

impl InputTensor {
    pub fn uint8(name: impl Into<String>, shape: Vec<i64>, data: impl Into<Bytes>) -> Self {
        Self { name: name.into(), datatype: DataType::Uint8, shape, data: data.into() }
    }

    pub fn bool(name: impl Into<String>, shape: Vec<i64>, values: &[bool]) -> Self {
        let data: Vec<u8> = values.iter().map(|&value| u8::from(value)).collect();
        Self { name: name.into(), datatype: DataType::Bool, shape, data: data.into() }
    }

    pub fn int32(name: impl Into<String>, shape: Vec<i64>, values: &[i32]) -> Self {
        let data: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        Self { name: name.into(), datatype: DataType::Int32, shape, data: data.into() }
    }

    pub fn int64(name: impl Into<String>, shape: Vec<i64>, values: &[i64]) -> Self {
        let data: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        Self { name: name.into(), datatype: DataType::Int64, shape, data: data.into() }
    }

    pub fn fp32(name: impl Into<String>, shape: Vec<i64>, values: &[f32]) -> Self {
        let data: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
        Self { name: name.into(), datatype: DataType::Fp32, shape, data: data.into() }
    }

    /// Checks that the data length matches shape x element size, so a caller
    /// bug is reported here, naming the tensor, instead of by the server.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let invalid = |reason: String| ClientError::InvalidInput { name: self.name.clone(), reason };
        let count = element_count(&self.shape)
            .ok_or_else(|| invalid(format!("shape {:?} has a negative or overflowing dimension", self.shape)))?;
        if let Some(size) = self.datatype.element_size() {
            let expected = count * size;
            if self.data.len() != expected {
                return Err(invalid(format!(
                    "{} bytes of {} data, but shape {:?} needs {expected}",
                    self.data.len(),
                    self.datatype,
                    self.shape
                )));
            }
        }
        Ok(())
    }
}

/// One output of an inference response.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    /// The datatype name as the server sent it ("FP32", ...).
    pub datatype: String,
    pub shape: Vec<i64>,
    /// Raw little-endian elements, row-major.
    pub raw: Bytes,
}

impl OutputTensor {
    pub fn as_f32(&self) -> Result<Vec<f32>, ClientError> {
        Ok(self.checked_chunks::<4>(DataType::Fp32)?.map(f32::from_le_bytes).collect())
    }

    pub fn as_i32(&self) -> Result<Vec<i32>, ClientError> {
        Ok(self.checked_chunks::<4>(DataType::Int32)?.map(i32::from_le_bytes).collect())
    }

    pub fn as_i64(&self) -> Result<Vec<i64>, ClientError> {
        Ok(self.checked_chunks::<8>(DataType::Int64)?.map(i64::from_le_bytes).collect())
    }

    pub fn as_bool(&self) -> Result<Vec<bool>, ClientError> {
        Ok(self.checked_chunks::<1>(DataType::Bool)?.map(|[byte]| byte != 0).collect())
    }

    /// Element count from the shape (the batch dimension included).
    pub fn element_count(&self) -> Result<usize, ClientError> {
        element_count(&self.shape).ok_or_else(|| ClientError::OutputMismatch {
            name: self.name.clone(),
            reason: format!("shape {:?} has a negative or overflowing dimension", self.shape),
        })
    }

    fn checked_chunks<const N: usize>(
        &self,
        expected: DataType,
    ) -> Result<impl Iterator<Item = [u8; N]> + '_, ClientError> {
        let mismatch = |reason: String| ClientError::OutputMismatch { name: self.name.clone(), reason };
        if self.datatype != expected.as_str() {
            return Err(mismatch(format!("datatype is {}, expected {expected}", self.datatype)));
        }
        let needed = self.element_count()? * N;
        if self.raw.len() != needed {
            return Err(mismatch(format!(
                "{} raw bytes, but {} shape {:?} needs {needed}",
                self.raw.len(),
                self.datatype,
                self.shape
            )));
        }
        Ok(self.raw.chunks_exact(N).map(|chunk| {
            let mut element = [0u8; N];
            element.copy_from_slice(chunk);
            element
        }))
    }
}

/// An inference request: tensors travel as raw contents.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    pub model: String,
    pub inputs: Vec<InputTensor>,
    /// Output names to return; empty asks for every output of the model.
    pub outputs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    pub model: String,
    pub outputs: Vec<OutputTensor>,
}

impl InferResponse {
    pub fn output(&self, name: &str) -> Result<&OutputTensor, ClientError> {
        self.outputs.iter().find(|output| output.name == name).ok_or_else(|| ClientError::OutputMissing {
            model: self.model.clone(),
            name: name.to_owned(),
            present: self.outputs.iter().map(|output| output.name.clone()).collect(),
        })
    }
}

/// Input or output description from the model metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    /// -1 marks a variable-size dimension (the batch dimension of a batching model).
    pub shape: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(datatype: &str, shape: Vec<i64>, raw: Vec<u8>) -> OutputTensor {
        OutputTensor { name: "out".into(), datatype: datatype.into(), shape, raw: raw.into() }
    }

    #[test]
    fn datatype_names_round_trip() {
        for dtype in DataType::ALL {
            assert_eq!(DataType::from_wire(dtype.as_str()), Some(dtype));
        }
        assert_eq!(DataType::from_wire("FLOAT"), None);
        assert_eq!(DataType::Fp32.as_str(), "FP32");
        assert_eq!(DataType::Bytes.element_size(), None);
    }

    #[test]
    fn inputs_encode_little_endian() {
        let tensor = InputTensor::int64("tokens", vec![1, 2], &[49406, -1]);
        assert_eq!(tensor.datatype, DataType::Int64);
        let mut expected = 49406i64.to_le_bytes().to_vec();
        expected.extend_from_slice(&(-1i64).to_le_bytes());
        assert_eq!(tensor.data.as_ref(), expected.as_slice());

        let tensor = InputTensor::fp32("x", vec![2], &[1.0, -2.5]);
        assert_eq!(&tensor.data[..4], &1.0f32.to_le_bytes());
        assert_eq!(&tensor.data[4..], &(-2.5f32).to_le_bytes());

        let tensor = InputTensor::bool("flags", vec![3], &[true, false, true]);
        assert_eq!(tensor.data.as_ref(), &[1, 0, 1]);
        assert!(tensor.validate().is_ok());
    }

    #[test]
    fn input_length_must_match_shape() {
        let tensor = InputTensor::fp32("images", vec![1, 3, 2, 2], &[0.0; 11]);
        let err = tensor.validate().unwrap_err();
        assert!(matches!(err, ClientError::InvalidInput { ref name, .. } if name == "images"), "{err}");
        assert!(err.to_string().contains("44 bytes"), "{err}");

        let tensor = InputTensor::uint8("original", vec![-1, 3], vec![0u8; 6]);
        assert!(tensor.validate().is_err());
        assert!(InputTensor::uint8("original", vec![2, 3], vec![0u8; 6]).validate().is_ok());
    }

    #[test]
    fn outputs_decode_typed_values() {
        let raw: Vec<u8> = [0.5f32, -1.0, 3.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(output("FP32", vec![1, 3], raw).as_f32().unwrap(), vec![0.5, -1.0, 3.25]);

        let raw: Vec<u8> = [7i32, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(output("INT32", vec![2], raw).as_i32().unwrap(), vec![7, -3]);

        let raw: Vec<u8> = [i64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(output("INT64", vec![1], raw).as_i64().unwrap(), vec![i64::MAX]);

        assert_eq!(output("BOOL", vec![3], vec![1, 0, 2]).as_bool().unwrap(), vec![true, false, true]);
        assert_eq!(output("FP32", vec![0, 512], vec![]).as_f32().unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn outputs_check_datatype_and_length() {
        let err = output("FP16", vec![2], vec![0; 4]).as_f32().unwrap_err();
        assert!(err.to_string().contains("datatype is FP16, expected FP32"), "{err}");

        let err = output("FP32", vec![1, 3], vec![0; 8]).as_f32().unwrap_err();
        assert!(err.to_string().contains("8 raw bytes"), "{err}");

        let err = output("INT32", vec![-1], vec![]).as_i32().unwrap_err();
        assert!(matches!(err, ClientError::OutputMismatch { .. }), "{err}");
    }

    #[test]
    fn missing_output_names_what_is_present() {
        let response = InferResponse { model: "clip_text".into(), outputs: vec![output("FP32", vec![1], vec![0; 4])] };
        assert!(response.output("out").is_ok());
        let err = response.output("embeddings").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("embeddings") && text.contains("clip_text") && text.contains("out"), "{text}");
    }
}
