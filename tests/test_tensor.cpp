// Tensor<T> and TensorRef: shapes, strides, ownership, TensorView rows and column ranges.
#include <gtest/gtest.h>

#include <loom/tensor.hpp>

namespace test_tensor {

namespace {

TEST(Tensor, OwningRowMajorShapeAndStrides) {
  loom::Tensor<float> t({2, 3, 4});
  EXPECT_TRUE(t.owning());
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.stride(0), 12);
  EXPECT_EQ(t.stride(1), 4);
  EXPECT_EQ(t.stride(2), 1);
  for (float v : t.span()) EXPECT_EQ(v, 0.0f);
  t(1, 2, 3) = 5.0f;
  EXPECT_EQ(t.data()[1 * 12 + 2 * 4 + 3], 5.0f);
  EXPECT_EQ(t.row(1)[11], 5.0f);
}

TEST(Tensor, ViewsShareMemoryAndCopiesOfOwnersAreDeep) {
  std::vector<double> buf(6, 1.0);
  auto v = loom::Tensor<double>::view(buf.data(), {2, 3});
  EXPECT_FALSE(v.owning());
  v(0, 1) = 7.0;
  EXPECT_EQ(buf[1], 7.0);
  auto v2 = v;  // a copy of a view is a view
  v2(1, 2) = 9.0;
  EXPECT_EQ(buf[5], 9.0);

  loom::Tensor<double> own({2, 2});
  auto copy = own;
  copy(0, 0) = 3.0;
  EXPECT_EQ(own(0, 0), 0.0);
  EXPECT_NE(copy.data(), own.data());
  auto moved = std::move(copy);
  EXPECT_EQ(moved(0, 0), 3.0);
  EXPECT_TRUE(moved.owning());
}

TEST(TensorView, RowsAndColumnRangesViewTheSameMemory) {
  loom::Tensor<float> a({3, 10});  // e.g. a fused [q(4) | k(3) | v(3)] projection of 3 rows
  for (int i = 0; i < 30; ++i) a.data()[i] = float(i);
  const loom::TensorView<float> all = a;
  EXPECT_TRUE(all.contiguous());
  const loom::TensorView<float> k = all.cols(4, 7);
  EXPECT_EQ(k.shape(), loom::Shape({3, 3}));
  EXPECT_EQ(k.ld(), 10);
  EXPECT_FALSE(k.contiguous());
  EXPECT_EQ(k(1, 0), 14.0f);
  EXPECT_EQ(k.row(2), a.data() + 24);
  const loom::TensorView<const float> last = k.rows(2, 3);  // writable converts to read-only
  EXPECT_EQ(last.n_rows(), 1);
  EXPECT_EQ(last(0, 2), 26.0f);
  k(0, 0) = -1.0f;
  EXPECT_EQ(a(0, 4), -1.0f);
  EXPECT_THROW(all.cols(8, 11), loom::Error);
  EXPECT_THROW(all.rows(2, 1), loom::Error);
  EXPECT_THROW((void)k.span(), loom::Error);
  EXPECT_EQ(all.rows(1, 2).span().size(), 10u);
  const auto m = loom::TensorView<const float>::matrix(a.data() + 1, 2, 4, 10);
  EXPECT_EQ(m(1, 3), 14.0f);
}

TEST(Tensor, ReshapeAndRankLimits) {
  loom::Tensor<float> t({4, 6});
  auto r = t.reshaped({2, 3, 4});
  EXPECT_EQ(r.data(), t.data());
  EXPECT_EQ(r.stride(0), 12);
  EXPECT_THROW(t.reshaped({5, 5}), loom::Error);
  EXPECT_THROW(loom::Shape({1, 2, 3, 4, 5}), loom::Error);
  EXPECT_THROW(loom::Shape({2, -1}), loom::Error);
  EXPECT_EQ(loom::Shape({2, 3}).str(), "[2, 3]");
}

TEST(TensorRef, TypedViewsAndRows) {
  std::vector<loom::f16> h(8);
  for (int i = 0; i < 8; ++i) h[i] = loom::to_f16(float(i));
  loom::TensorRef ref{loom::DType::f16, {2, 4}, reinterpret_cast<const std::byte*>(h.data()), 16};
  EXPECT_EQ(ref.rows(), 2);
  EXPECT_EQ(ref.cols(), 4);
  EXPECT_EQ(ref.row_bytes(), 8u);
  EXPECT_EQ(ref.row(1), ref.data + 8);
  auto typed = ref.as<loom::f16>();
  EXPECT_EQ(loom::to_float(typed(1, 3)), 7.0f);
  EXPECT_THROW(ref.as<float>(), loom::Error);
  loom::Tensor<float> f({3});
  EXPECT_EQ(loom::TensorRef::of(f).dtype, loom::DType::f32);
  EXPECT_EQ(loom::TensorRef::of(f).nbytes, 12u);
  // Quantized rows are whole blocks.
  EXPECT_EQ(loom::row_bytes(loom::DType::q8_0, 64), std::optional<std::uint64_t>(68));
  EXPECT_EQ(loom::row_bytes(loom::DType::q4_k, 100), std::nullopt);
}

}  // namespace

}  // namespace test_tensor
