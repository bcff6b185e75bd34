// decode::PagePool: the decode cache's memory, in fixed-size pages.
//
// A page holds one chunk of C tokens of a sequence (every stream's rows of those tokens
// and the compressed blocks stored with them, cache_state.h). A sequence lists its pages
// in token order (its page table). Sequences forked from a common prefix list the same
// pages, each counted once per holder (refs); a page is copied before it is written while
// another sequence still holds it (copy on write, DecodeCache::State::prepare_write).
// Released pages go to a free list and are reused before new memory is taken; max_pages
// (DecodeShape::max_pages; 0: no limit) bounds the pages in use at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "nsa/config.h"

namespace nsa::decode {

class PagePool {
 public:
  PagePool() = default;
  PagePool(std::size_t page_bytes, index_t max_pages) : page_bytes_(page_bytes), max_pages_(max_pages) {}

  // A page for one holder: a free one if any, else new memory. The caller has checked
  // available() (take() past the budget is a logic error and throws std::logic_error).
  std::int32_t take();
  void retain(std::int32_t id) { ++refs_[static_cast<size_t>(id)]; }
  // Drops one holder; the page is free (and reusable) when none is left.
  void release(std::int32_t id);

  std::int32_t refs(std::int32_t id) const { return refs_[static_cast<size_t>(id)]; }
  std::byte* data(std::int32_t id) const { return pages_[static_cast<size_t>(id)].get(); }

  std::size_t page_bytes() const { return page_bytes_; }
  index_t max_pages() const { return max_pages_; }
  index_t in_use() const { return in_use_; }
  // Pages that take() can still hand out (max_pages - in_use; a large number without a limit).
  index_t available() const;
  // Pages held by more than one sequence.
  index_t shared() const;

 private:
  std::size_t page_bytes_ = 0;
  index_t max_pages_ = 0;
  index_t in_use_ = 0;
  std::vector<std::unique_ptr<std::byte[]>> pages_;  // by id (allocated once, kept when free)
  std::vector<std::int32_t> refs_;                   // holders per id; 0: free
  std::vector<std::int32_t> free_;                   // ids with no holder
};

}  // namespace nsa::decode
