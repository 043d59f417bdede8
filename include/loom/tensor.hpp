// Tensor<T>: a row-major array of up to 4 dimensions that either owns its elements or views
// memory owned elsewhere (a mapped file, a scratch buffer). TensorRef: the same idea with the
// element type known only at run time (f16, bf16, quantized blocks...), used for stored weights.
#pragma once

#include "loom/eigen.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"

namespace loom {

inline constexpr int max_rank = 4;

/// A shape of up to 4 dimensions, outermost first (PyTorch order).
struct Shape {
  std::array<std::int64_t, max_rank> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> d) { assign(std::span<const std::int64_t>(d.begin(), d.size())); }
  explicit Shape(std::span<const std::int64_t> d) { assign(d); }

  std::int64_t operator[](int i) const { return dims[std::size_t(i)]; }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[std::size_t(i)];
    return n;
  }
  friend bool operator==(const Shape& a, const Shape& b) {
    return a.rank == b.rank && std::equal(a.dims.begin(), a.dims.begin() + a.rank, b.dims.begin());
  }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[std::size_t(i)]);
    return s + "]";
  }

 private:
  void assign(std::span<const std::int64_t> d) {
    if (d.size() > max_rank)
      fail(ErrorKind::invalid_argument, "tensor", "rank ", d.size(), " exceeds the maximum of ", max_rank);
    rank = int(d.size());
    for (std::size_t i = 0; i < d.size(); ++i) {
      if (d[i] < 0) fail(ErrorKind::invalid_argument, "tensor", "negative dimension ", d[i]);
      dims[i] = d[i];
    }
  }
};

/// A row-major tensor of T, owning (constructed from a shape) or viewing (Tensor::view).
/// Copying an owning tensor copies its elements; copying a view copies the view.
template <typename T>
class Tensor {
 public:
  using value_type = std::remove_const_t<T>;

  Tensor() = default;
  /// An owning tensor of the given shape, zero-initialized.
  explicit Tensor(Shape shape) : shape_(shape) {
    storage_.assign(std::size_t(shape.numel()), value_type{});
    data_ = storage_.data();
    set_strides();
  }
  Tensor(std::initializer_list<std::int64_t> shape) : Tensor(Shape(shape)) {}

  /// A view of `shape` over memory that outlives the tensor.
  static Tensor view(T* data, Shape shape) {
    Tensor t;
    t.shape_ = shape;
    t.data_ = data;
    t.set_strides();
    return t;
  }

  Tensor(const Tensor& o) : shape_(o.shape_), strides_(o.strides_), storage_(o.storage_) {
    data_ = o.owning() ? storage_.data() : o.data_;
  }
  Tensor& operator=(const Tensor& o) {
    if (this != &o) {
      shape_ = o.shape_;
      strides_ = o.strides_;
      storage_ = o.storage_;
      data_ = o.owning() ? storage_.data() : o.data_;
    }
    return *this;
  }
  Tensor(Tensor&& o) noexcept { *this = std::move(o); }
  Tensor& operator=(Tensor&& o) noexcept {
    const bool own = o.owning();
    shape_ = o.shape_;
    strides_ = o.strides_;
    storage_ = std::move(o.storage_);
    data_ = own ? storage_.data() : o.data_;
    o.data_ = nullptr;
    o.shape_ = Shape{};
    return *this;
  }

  bool owning() const { return !storage_.empty() && data_ == storage_.data(); }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank; }
  std::int64_t dim(int i) const { return shape_[i]; }
  std::int64_t stride(int i) const { return strides_[std::size_t(i)]; }
  std::int64_t numel() const { return shape_.numel(); }
  T* data() const { return data_; }
  std::span<T> span() const { return {data_, std::size_t(numel())}; }

  /// Element access by index; the number of indices must equal the rank.
  template <typename... I>
  T& operator()(I... idx) const {
    static_assert(sizeof...(I) <= max_rank);
    const std::array<std::int64_t, sizeof...(I)> ix{std::int64_t(idx)...};
    std::int64_t off = 0;
    for (std::size_t k = 0; k < ix.size(); ++k) off += ix[k] * strides_[k];
    return data_[off];
  }

  /// Pointer to row i of the outermost dimension.
  T* row(std::int64_t i) const { return data_ + i * strides_[0]; }

  /// The same elements seen with another shape of equal element count.
  Tensor<T> reshaped(Shape s) const {
    if (s.numel() != numel())
      fail(ErrorKind::invalid_argument, "tensor", "cannot reshape ", shape_.str(), " to ", s.str());
    return Tensor<T>::view(data_, s);
  }

  /// Zero-copy Eigen view of a rank-2 tensor as a row-major matrix (rank 1: one row).
  auto matrix() const {
    using M = Eigen::Matrix<value_type, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Mapped = std::conditional_t<std::is_const_v<T>, const M, M>;
    const std::int64_t rows = rank() == 2 ? dim(0) : 1;
    const std::int64_t cols = rank() == 2 ? dim(1) : numel();
    return Eigen::Map<Mapped>(data_, Eigen::Index(rows), Eigen::Index(cols));
  }
  /// Zero-copy Eigen view of all elements as a column vector.
  auto vector() const {
    using V = Eigen::Matrix<value_type, Eigen::Dynamic, 1>;
    using Mapped = std::conditional_t<std::is_const_v<T>, const V, V>;
    return Eigen::Map<Mapped>(data_, Eigen::Index(numel()));
  }

 private:
  void set_strides() {
    std::int64_t s = 1;
    for (int i = shape_.rank - 1; i >= 0; --i) {
      strides_[std::size_t(i)] = s;
      s *= shape_[i];
    }
  }

  Shape shape_{};
  std::array<std::int64_t, max_rank> strides_{};
  std::vector<value_type> storage_;
  T* data_ = nullptr;
};

/// A read-only view of stored tensor bytes whose element type is known at run time.
/// Rows are the outermost dimension; a 2-D weight is [out, in] with each row `row_bytes` long.
struct TensorRef {
  DType dtype = DType::f32;
  Shape shape;
  const std::byte* data = nullptr;
  std::uint64_t nbytes = 0;

  bool empty() const { return data == nullptr; }
  std::int64_t numel() const { return shape.numel(); }
  /// Elements per row (the innermost dimension).
  std::int64_t cols() const { return shape.rank ? shape[shape.rank - 1] : 1; }
  /// Number of rows (product of all but the innermost dimension).
  std::int64_t rows() const { return shape.rank ? numel() / std::max<std::int64_t>(cols(), 1) : 1; }
  std::size_t row_bytes() const { return std::size_t(*loom::row_bytes(dtype, cols())); }
  const std::byte* row(std::int64_t i) const { return data + std::size_t(i) * row_bytes(); }

  /// A typed view; throws when the stored type is not T.
  template <typename T>
  Tensor<const T> as() const {
    if (dtype != dtype_of_v<T>)
      fail(ErrorKind::invalid_argument, "tensor", "tensor of type ", to_string(dtype), " viewed as ",
           to_string(dtype_of_v<T>));
    return Tensor<const T>::view(reinterpret_cast<const T*>(data), shape);
  }

  /// A view of a typed tensor.
  template <typename T>
  static TensorRef of(const Tensor<T>& t) {
    using V = std::remove_const_t<T>;
    return TensorRef{dtype_of_v<V>, t.shape(), reinterpret_cast<const std::byte*>(t.data()),
                     std::uint64_t(t.numel()) * sizeof(V)};
  }
};

}  // namespace loom
