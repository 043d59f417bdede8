// TensorView<T>: shape plus strides over memory owned elsewhere, the currency of the nn API (a
// block's input rows, the q/k/v column ranges of a fused projection, a scratch buffer).
// Tensor<T>: a row-major array of up to 4 dimensions that owns its elements (or views memory
// owned elsewhere), convertible to a TensorView. TensorRef: a view whose element type is known
// only at run time (f16, bf16, quantized blocks...), used for stored weights.
#pragma once

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

/// A non-owning view of up to 4 dimensions: element type T (const T for read-only views), shape,
/// and a stride per dimension in elements. Copying is cheap (no allocation); the viewed memory
/// must outlive the view. rows() and cols() take sub-ranges of the outermost and innermost
/// dimensions without copying, so a view can describe the k columns of a fused [q | k | v] row.
template <typename T>
class TensorView {
 public:
  using value_type = std::remove_const_t<T>;

  TensorView() = default;
  /// A contiguous row-major view of `shape` at `data`.
  TensorView(T* data, Shape shape) : data_(data), shape_(shape) {
    std::int64_t s = 1;
    for (int i = shape_.rank - 1; i >= 0; --i) {
      strides_[std::size_t(i)] = s;
      s *= shape_[i];
    }
  }
  /// A view with explicit strides (in elements, outermost first).
  TensorView(T* data, Shape shape, std::array<std::int64_t, max_rank> strides)
      : data_(data), shape_(shape), strides_(strides) {}
  /// A 2-D view of `rows` rows of `cols` elements, rows `ld` elements apart.
  static TensorView matrix(T* data, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    return TensorView(data, Shape{rows, cols}, {ld, 1, 0, 0});
  }
  /// A read-only view converts from a writable one.
  template <typename U>
    requires(std::is_same_v<T, const U>)
  TensorView(const TensorView<U>& o) : data_(o.data()), shape_(o.shape()), strides_(o.strides()) {}

  T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  const std::array<std::int64_t, max_rank>& strides() const { return strides_; }
  int rank() const { return shape_.rank; }
  std::int64_t dim(int i) const { return shape_[i]; }
  std::int64_t stride(int i) const { return strides_[std::size_t(i)]; }
  std::int64_t numel() const { return shape_.numel(); }
  bool empty() const { return data_ == nullptr; }
  /// Elements per row (innermost dimension) and rows (outermost; 1 for rank 1).
  std::int64_t n_cols() const { return shape_.rank ? shape_[shape_.rank - 1] : 1; }
  std::int64_t n_rows() const { return shape_.rank > 1 ? shape_[0] : 1; }
  /// Elements from one row to the next (rank 2).
  std::int64_t ld() const { return shape_.rank > 1 ? strides_[0] : n_cols(); }
  /// True when the elements are one dense block in row-major order.
  bool contiguous() const {
    std::int64_t s = 1;
    for (int i = shape_.rank - 1; i >= 0; --i) {
      if (shape_[i] != 1 && strides_[std::size_t(i)] != s) return false;
      s *= shape_[i];
    }
    return true;
  }

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
  /// Rows [begin, end) of the outermost dimension.
  TensorView rows(std::int64_t begin, std::int64_t end) const {
    check_range(0, begin, end);
    TensorView v = *this;
    v.data_ = data_ + begin * strides_[0];
    v.shape_.dims[0] = end - begin;
    return v;
  }
  /// Columns [begin, end) of the innermost dimension (the same rows, a narrower window of each).
  TensorView cols(std::int64_t begin, std::int64_t end) const {
    const int last = shape_.rank - 1;
    check_range(last, begin, end);
    TensorView v = *this;
    v.data_ = data_ + begin * strides_[std::size_t(last)];
    v.shape_.dims[std::size_t(last)] = end - begin;
    return v;
  }
  /// A contiguous view's elements as one span.
  std::span<T> span() const {
    if (!contiguous()) fail(ErrorKind::invalid_argument, "tensor", "a strided view ", shape_.str(), " is not one span");
    return {data_, std::size_t(numel())};
  }

 private:
  void check_range(int d, std::int64_t begin, std::int64_t end) const {
    if (d < 0 || begin < 0 || end < begin || end > shape_[d])
      fail(ErrorKind::invalid_argument, "tensor", "range [", begin, ", ", end, ") of dimension ", d, " is outside ",
           shape_.str());
  }

  T* data_ = nullptr;
  Shape shape_{};
  std::array<std::int64_t, max_rank> strides_{};
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
    return as_view()(idx...);
  }

  /// Pointer to row i of the outermost dimension.
  T* row(std::int64_t i) const { return data_ + i * strides_[0]; }

  /// The same elements seen with another shape of equal element count.
  Tensor<T> reshaped(Shape s) const {
    if (s.numel() != numel())
      fail(ErrorKind::invalid_argument, "tensor", "cannot reshape ", shape_.str(), " to ", s.str());
    return Tensor<T>::view(data_, s);
  }

  /// The elements as a TensorView (writable unless T is const), and as a read-only one.
  TensorView<T> as_view() const { return TensorView<T>(data_, shape_, strides_); }
  operator TensorView<T>() const { return as_view(); }
  operator TensorView<const T>() const
    requires(!std::is_const_v<T>)
  {
    return as_view();
  }

 private:
  void set_strides() { strides_ = TensorView<T>(data_, shape_).strides(); }

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
