// What the C++ test executables share: a failure count and a check that reports what failed.
#pragma once

#include <cstdio>
#include <string>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

}  // namespace
