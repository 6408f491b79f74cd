// Status helpers used across module boundaries (absl::Status / absl::StatusOr).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define KVASIR_CONCAT_INNER_(a, b) a##b
#define KVASIR_CONCAT_(a, b) KVASIR_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status kvasir_status_ = (expr);        \
    if (!kvasir_status_.ok()) return kvasir_status_; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates an absl::StatusOr<T>; returns its status on error,
// otherwise moves the value into `lhs` (which may be a declaration, e.g. `auto x`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  KVASIR_ASSIGN_OR_RETURN_IMPL_(KVASIR_CONCAT_(kvasir_statusor_, __LINE__), lhs, expr)
#define KVASIR_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()
