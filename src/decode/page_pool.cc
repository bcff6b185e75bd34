#include "decode/page_pool.h"

#include <limits>
#include <stdexcept>

namespace nsa::decode {

std::int32_t PagePool::take() {
  if (available() <= 0) throw std::logic_error("PagePool::take past the budget (the caller checks available())");
  ++in_use_;
  if (!free_.empty()) {
    const std::int32_t id = free_.back();
    free_.pop_back();
    refs_[static_cast<size_t>(id)] = 1;
    return id;
  }
  pages_.push_back(std::unique_ptr<std::byte[]>(new std::byte[page_bytes_]));
  refs_.push_back(1);
  return static_cast<std::int32_t>(pages_.size() - 1);
}

void PagePool::release(std::int32_t id) {
  std::int32_t& r = refs_[static_cast<size_t>(id)];
  if (r <= 0) throw std::logic_error("PagePool::release of a free page");
  if (--r == 0) {
    free_.push_back(id);
    --in_use_;
  }
}

index_t PagePool::available() const {
  return max_pages_ > 0 ? max_pages_ - in_use_ : std::numeric_limits<std::int32_t>::max() - in_use_;
}

index_t PagePool::shared() const {
  index_t n = 0;
  for (std::int32_t r : refs_) n += r > 1;
  return n;
}

}  // namespace nsa::decode
