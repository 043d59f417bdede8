// A header that breaks the layering on purpose: the layering check must fail on this tree.
#pragma once

#include "loom/model/config.hpp"
