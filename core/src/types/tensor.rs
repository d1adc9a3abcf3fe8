//! `TensorData`: the numeric arrays of `loss_fn_inputs`, loss outputs and sampling extras.
//!
//! On the wire a tensor is either JSON (`{"data": [...], "dtype": "float32", "shape": [...]}`,
//! protocol.md 9.2) or a protobuf `Tensor` / `BatchedTensor` of little-endian bytes (10.3-10.4).
//! Only two public dtypes exist, `float32` and `int64`; narrower wire dtypes (int32, bfloat16) are
//! widened when decoded. A tensor is dense (row-major) or 2-D CSR (values plus row pointers and
//! column indices, unlisted cells take a pad value the server knows per field).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The element type of a [`TensorData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit IEEE float (`"float32"`).
    Float32,
    /// 64-bit signed integer (`"int64"`).
    Int64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Float32 => 4,
            DType::Int64 => 8,
        }
    }

    /// The wire name (`"float32"` or `"int64"`).
    pub fn name(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Int64 => "int64",
        }
    }
}

/// The stored values of a tensor, in their dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    /// `float32` values.
    Float32(Vec<f32>),
    /// `int64` values.
    Int64(Vec<i64>),
}

impl TensorValues {
    /// Number of stored values.
    pub fn len(&self) -> usize {
        match self {
            TensorValues::Float32(v) => v.len(),
            TensorValues::Int64(v) => v.len(),
        }
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> DType {
        match self {
            TensorValues::Float32(_) => DType::Float32,
            TensorValues::Int64(_) => DType::Int64,
        }
    }
}

/// Row pointers and column indices of a 2-D CSR tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrIndices {
    /// `nrows + 1` non-decreasing offsets into the values, starting at 0.
    pub crow_indices: Vec<i64>,
    /// One column index per stored value.
    pub col_indices: Vec<i64>,
}

/// A dense or CSR tensor of `float32` or `int64` values.
///
/// ```
/// use tinker_core::types::{TensorData, DType};
/// let weights = TensorData::from_f32(vec![0.0, 1.0, 1.0]);
/// assert_eq!(weights.dtype(), DType::Float32);
/// assert_eq!(weights.shape(), vec![3]);
///
/// let grid = TensorData::from_i64(vec![1, 2, 3, 4, 5, 6]).with_shape(vec![2, 3]).unwrap();
/// assert_eq!(grid.first_dim(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    values: TensorValues,
    shape: Option<Vec<usize>>,
    sparse: Option<CsrIndices>,
}

impl TensorData {
    /// A 1-D `float32` tensor.
    pub fn from_f32(values: impl Into<Vec<f32>>) -> TensorData {
        TensorData {
            values: TensorValues::Float32(values.into()),
            shape: None,
            sparse: None,
        }
    }

    /// A 1-D `int64` tensor.
    pub fn from_i64(values: impl Into<Vec<i64>>) -> TensorData {
        TensorData {
            values: TensorValues::Int64(values.into()),
            shape: None,
            sparse: None,
        }
    }

    /// A dense tensor from values and an explicit shape (checked).
    pub fn dense(values: TensorValues, shape: Option<Vec<usize>>) -> Result<TensorData> {
        let t = TensorData {
            values,
            shape: None,
            sparse: None,
        };
        match shape {
            Some(shape) => t.with_shape(shape),
            None => Ok(t),
        }
    }

    /// A 2-D CSR tensor. `shape` must be `[nrows, ncols]`; indices are checked.
    pub fn csr(
        values: TensorValues,
        shape: [usize; 2],
        crow_indices: Vec<i64>,
        col_indices: Vec<i64>,
    ) -> Result<TensorData> {
        let t = TensorData {
            values,
            shape: Some(shape.to_vec()),
            sparse: Some(CsrIndices {
                crow_indices,
                col_indices,
            }),
        };
        t.validate("tensor")?;
        Ok(t)
    }

    /// Gives a dense tensor a shape. The product of the dimensions must equal the number of values.
    pub fn with_shape(mut self, shape: Vec<usize>) -> Result<TensorData> {
        if self.sparse.is_some() {
            return Err(Error::invalid(
                "tensor.shape",
                "the shape of a CSR tensor is fixed at construction",
            ));
        }
        self.shape = Some(shape);
        self.validate("tensor")?;
        Ok(self)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.values.dtype()
    }

    /// The stored values (for CSR, only the stored cells).
    pub fn values(&self) -> &TensorValues {
        &self.values
    }

    /// Takes the stored values out.
    pub fn into_values(self) -> TensorValues {
        self.values
    }

    /// The explicit shape, if one was given (`None` means 1-D of [`TensorValues::len`]).
    pub fn explicit_shape(&self) -> Option<&[usize]> {
        self.shape.as_deref()
    }

    /// The effective shape.
    pub fn shape(&self) -> Vec<usize> {
        match &self.shape {
            Some(s) => s.clone(),
            None => vec![self.values.len()],
        }
    }

    /// The size of the first dimension (the per-position axis of a `loss_fn_inputs` tensor).
    pub fn first_dim(&self) -> usize {
        match &self.shape {
            Some(s) => s.first().copied().unwrap_or(1),
            None => self.values.len(),
        }
    }

    /// The CSR indices, when the tensor is sparse.
    pub fn sparse(&self) -> Option<&CsrIndices> {
        self.sparse.as_ref()
    }

    /// Whether the tensor is stored as CSR.
    pub fn is_sparse(&self) -> bool {
        self.sparse.is_some()
    }

    /// The `float32` values, if that is the dtype.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            TensorValues::Float32(v) => Some(v),
            TensorValues::Int64(_) => None,
        }
    }

    /// The `int64` values, if that is the dtype.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.values {
            TensorValues::Int64(v) => Some(v),
            TensorValues::Float32(_) => None,
        }
    }

    /// All cells as `f64`, row-major, expanding CSR with `pad` for unlisted cells.
    pub fn to_dense_f64(&self, pad: f64) -> Vec<f64> {
        let get = |i: usize| match &self.values {
            TensorValues::Float32(v) => f64::from(v[i]),
            TensorValues::Int64(v) => v[i] as f64,
        };
        match &self.sparse {
            None => (0..self.values.len()).map(get).collect(),
            Some(csr) => {
                let shape = self.shape();
                let (rows, cols) = (shape[0], shape[1]);
                let mut out = vec![pad; rows * cols];
                for r in 0..rows {
                    let (a, b) = (
                        csr.crow_indices[r] as usize,
                        csr.crow_indices[r + 1] as usize,
                    );
                    for k in a..b {
                        out[r * cols + csr.col_indices[k] as usize] = get(k);
                    }
                }
                out
            }
        }
    }

    /// Checks internal consistency; `location` names the tensor in the error.
    pub fn validate(&self, location: &str) -> Result<()> {
        if let TensorValues::Float32(v) = &self.values {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::invalid(
                    format!("{location}[{i}]"),
                    format!(
                        "value {} is not finite; NaN and infinity cannot be sent",
                        v[i]
                    ),
                ));
            }
        }
        self.validate_layout(location)
    }

    /// A tensor from its parts, unchecked: for decoders, which check the layout themselves
    /// (with [`TensorData::validate_layout`]) and must accept non-finite values from the server.
    pub(crate) fn from_parts(
        values: TensorValues,
        shape: Option<Vec<usize>>,
        sparse: Option<CsrIndices>,
    ) -> TensorData {
        TensorData {
            values,
            shape,
            sparse,
        }
    }

    /// The structural half of [`TensorData::validate`]: shape against value count, CSR indices.
    /// Values themselves (NaN, infinity) are not looked at.
    pub(crate) fn validate_layout(&self, location: &str) -> Result<()> {
        let n = self.values.len();
        match (&self.sparse, &self.shape) {
            (None, None) => Ok(()),
            (None, Some(shape)) => {
                let product: usize = shape.iter().product();
                if product != n {
                    return Err(Error::invalid(
                        location,
                        format!("shape {shape:?} holds {product} values but {n} were given"),
                    ));
                }
                Ok(())
            }
            (Some(_), None) => Err(Error::invalid(location, "a CSR tensor needs a 2-D shape")),
            (Some(csr), Some(shape)) => {
                if shape.len() != 2 {
                    return Err(Error::invalid(
                        location,
                        format!("a CSR tensor must be 2-D, shape is {shape:?}"),
                    ));
                }
                let (rows, cols) = (shape[0], shape[1]);
                if csr.crow_indices.len() != rows + 1 {
                    return Err(Error::invalid(
                        format!("{location}.sparse_crow_indices"),
                        format!(
                            "expected {} row pointers (rows + 1), got {}",
                            rows + 1,
                            csr.crow_indices.len()
                        ),
                    ));
                }
                if csr.crow_indices.first() != Some(&0)
                    || csr.crow_indices.windows(2).any(|w| w[0] > w[1])
                    || csr.crow_indices.last().copied() != Some(n as i64)
                {
                    return Err(Error::invalid(
                        format!("{location}.sparse_crow_indices"),
                        format!("row pointers must start at 0, never decrease and end at the value count {n}"),
                    ));
                }
                if csr.col_indices.len() != n {
                    return Err(Error::invalid(
                        format!("{location}.sparse_col_indices"),
                        format!(
                            "expected one column index per stored value ({n}), got {}",
                            csr.col_indices.len()
                        ),
                    ));
                }
                if let Some(c) = csr
                    .col_indices
                    .iter()
                    .find(|&&c| c < 0 || c as usize >= cols)
                {
                    return Err(Error::invalid(
                        format!("{location}.sparse_col_indices"),
                        format!("column index {c} is outside 0..{cols}"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Bytes this tensor adds to the forward_backward size estimate (protocol.md 10.2): the values
    /// in their dtype plus 8 bytes per CSR row pointer and column index.
    pub fn estimated_bytes(&self) -> usize {
        let values = self.values.len() * self.dtype().size();
        match &self.sparse {
            None => values,
            Some(csr) => values + 8 * (csr.crow_indices.len() + csr.col_indices.len()),
        }
    }
}

impl From<Vec<f32>> for TensorData {
    fn from(v: Vec<f32>) -> TensorData {
        TensorData::from_f32(v)
    }
}

impl From<Vec<i64>> for TensorData {
    fn from(v: Vec<i64>) -> TensorData {
        TensorData::from_i64(v)
    }
}

/// The JSON shape of a tensor (protocol.md 9.2).
#[derive(Serialize, Deserialize)]
struct TensorJson {
    data: Vec<serde_json::Number>,
    dtype: DType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shape: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sparse_crow_indices: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sparse_col_indices: Option<Vec<i64>>,
}

impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match &self.values {
            TensorValues::Float32(v) => map.serialize_entry("data", v)?,
            TensorValues::Int64(v) => map.serialize_entry("data", v)?,
        }
        map.serialize_entry("dtype", &self.dtype())?;
        if let Some(shape) = &self.shape {
            map.serialize_entry("shape", shape)?;
        }
        if let Some(csr) = &self.sparse {
            map.serialize_entry("sparse_crow_indices", &csr.crow_indices)?;
            map.serialize_entry("sparse_col_indices", &csr.col_indices)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<TensorData, D::Error> {
        let json = TensorJson::deserialize(deserializer)?;
        let values = match json.dtype {
            DType::Float32 => TensorValues::Float32(
                json.data
                    .iter()
                    .map(|n| {
                        n.as_f64()
                            .map(|x| x as f32)
                            .ok_or_else(|| D::Error::custom("non-numeric tensor value"))
                    })
                    .collect::<std::result::Result<_, _>>()?,
            ),
            DType::Int64 => TensorValues::Int64(
                json.data
                    .iter()
                    .map(|n| {
                        n.as_i64()
                            .or_else(|| n.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64))
                            .ok_or_else(|| {
                                D::Error::custom(format!("int64 tensor holds non-integer {n}"))
                            })
                    })
                    .collect::<std::result::Result<_, _>>()?,
            ),
        };
        let sparse = match (json.sparse_crow_indices, json.sparse_col_indices) {
            (Some(crow_indices), Some(col_indices)) => Some(CsrIndices {
                crow_indices,
                col_indices,
            }),
            (None, None) => None,
            _ => {
                return Err(D::Error::custom(
                    "sparse_crow_indices and sparse_col_indices must be given together",
                ))
            }
        };
        let t = TensorData {
            values,
            shape: json.shape,
            sparse,
        };
        t.validate("tensor").map_err(D::Error::custom)?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dense_json_round_trips_and_omits_absent_shape() {
        let t = TensorData::from_f32(vec![0.0, 1.0, 0.5]);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v, json!({"data": [0.0, 1.0, 0.5], "dtype": "float32"}));
        let back: TensorData = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn csr_json_matches_the_protocol_example() {
        let v = json!({"data": [5, 7], "dtype": "int64", "shape": [3, 4],
                       "sparse_crow_indices": [0, 1, 1, 2], "sparse_col_indices": [2, 0]});
        let t: TensorData = serde_json::from_value(v.clone()).unwrap();
        assert!(t.is_sparse());
        assert_eq!(
            t.to_dense_f64(-1.0),
            vec![-1.0, -1.0, 5.0, -1.0, -1.0, -1.0, -1.0, -1.0, 7.0, -1.0, -1.0, -1.0]
        );
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        assert_eq!(t.estimated_bytes(), 2 * 8 + 8 * 6);
    }

    #[test]
    fn inconsistent_tensors_are_rejected_with_a_location() {
        let err = TensorData::from_i64(vec![1, 2, 3])
            .with_shape(vec![2, 2])
            .unwrap_err();
        assert!(err.to_string().contains("holds 4 values but 3"), "{err}");
        let err =
            TensorData::csr(TensorValues::Int64(vec![1]), [2, 2], vec![0, 1], vec![0]).unwrap_err();
        assert!(err.to_string().contains("row pointers"), "{err}");
        let err = TensorData::from_f32(vec![1.0, f32::NAN])
            .validate("weights")
            .unwrap_err();
        assert!(err.to_string().contains("weights[1]"), "{err}");
        let bad: std::result::Result<TensorData, _> =
            serde_json::from_value(json!({"data": [1.5], "dtype": "int64"}));
        assert!(bad.is_err());
    }
}
