#!/usr/bin/env Rscript
# Frozen reference values for tests/python/test_parity_r.py (issue 14, item 6: the parity harness).
#
# Run with `make reference` (needs Debian's r-base-core, r-cran-mass, r-cran-sandwich, r-cran-aer,
# r-cran-plm, r-cran-matchit). It writes, next to this script:
#   tiny_panel.csv     a small synthetic firm-year panel (seeded; generated here, so R and Python read
#                      the very same numbers)
#   grunfeld.csv       plm's Grunfeld data (public; 10 US firms 1935-1954)
#   quine.csv          MASS's quine data (public; school absences)
#   lalonde.csv        MatchIt's lalonde data (public; NSW job-training evaluation)
#   reference_values.csv  one row per (case, quantity, term): the value R computes
#   psm_matches.csv    MatchIt's nearest-neighbour matches on lalonde
# `make test` only reads these files: R is never called at test time.
#
# Small-sample conventions written out (so the Python side can check its own):
# * CRV1, "fixest/pyfixest default": V = G/(G-1) * (N-1)/(N-K) * V_HC0 where V_HC0 is sandwich's
#   vcovCL(type = "HC0", cadjust = FALSE) of the explicit-dummy fit and K = slopes + intercept +
#   FE dummies of the FE dimensions NOT nested in the cluster variable (a nested FE dimension
#   counts one parameter), the rule of fixest's ssc(K.fixef = "nested") and pyfixest's default.
# * CRV1, "full": the same with K = rank of the explicit-dummy design (every FE level counted,
#   redundant ones excluded exactly) -- Stata's regress with dummies.
suppressPackageStartupMessages({
  library(MASS); library(sandwich); library(AER); library(plm); library(MatchIt)
})
here <- local({
  a <- commandArgs(trailingOnly = FALSE)
  f <- sub("^--file=", "", a[grep("^--file=", a)])
  if (length(f)) dirname(normalizePath(f)) else getwd()
})
num <- function(x) sprintf("%.17g", x)
write_frame <- function(df, name) {
  out <- df
  for (j in names(out)) if (is.double(out[[j]])) out[[j]] <- num(out[[j]])
  write.csv(out, file.path(here, name), row.names = FALSE, quote = TRUE, na = "")
}
rows <- list()
put <- function(case, quantity, term, value) {
  rows[[length(rows) + 1]] <<- data.frame(case = case, quantity = quantity, term = term,
                                          value = num(value), stringsAsFactors = FALSE)
}

# --------------------------------------------------------------------------- the tiny panel
set.seed(20240601)
n_city <- 12; firms_per_city <- 5; years <- 2010:2019
city <- rep(sprintf("C%02d", 1:n_city), each = firms_per_city)
firm <- sprintf("F%03d", seq_along(city))
province <- sprintf("P%d", (as.integer(factor(city)) - 1) %/% 3 + 1)
industry <- sample(c("C26", "C35", "C39"), length(firm), replace = TRUE)
cohort <- c(2014, 2014, 2015, 2015, 2016, 2016, 2017, NA, NA, NA, NA, NA)  # per city; NA = never
names(cohort) <- sprintf("C%02d", 1:n_city)
panel <- expand.grid(year = years, i = seq_along(firm))
panel$stkcd <- firm[panel$i]; panel$city_code <- city[panel$i]
panel$province_code <- province[panel$i]; panel$industry_code <- industry[panel$i]
u_city <- rnorm(n_city); names(u_city) <- sprintf("C%02d", 1:n_city)
a_firm <- rnorm(length(firm), sd = 0.7); g_year <- rnorm(length(years), sd = 0.3)
ct <- cohort[panel$city_code]
panel$policy <- as.numeric(!is.na(ct) & panel$year >= ct)
n <- nrow(panel)
panel$x1 <- rnorm(n) + 0.3 * a_firm[panel$i]
panel$x2 <- rnorm(n)
# instruments vary by city-year; the endogenous regressor d depends on them and on u
panel$iv1 <- rnorm(n_city)[as.integer(factor(panel$city_code))] * (panel$year - 2009) / 10 + rnorm(n, sd = 0.5)
panel$iv2 <- rnorm(n)
e <- rnorm(n)
panel$d <- 0.8 * panel$iv1 + 0.4 * panel$iv2 + 0.5 * panel$x1 + 0.6 * e + rnorm(n, sd = 0.5) +
  a_firm[panel$i]
panel$y <- 0.25 * panel$policy + 0.4 * panel$d + 0.3 * panel$x1 - 0.2 * panel$x2 +
  a_firm[panel$i] + g_year[panel$year - 2009] + u_city[panel$city_code] * 0.2 + e + rnorm(n)
theta <- 1.5
mu <- exp(0.3 + 0.5 * a_firm[panel$i] + g_year[panel$year - 2009] + 0.3 * panel$policy + 0.2 * panel$x1)
panel$y_count <- rnbinom(n, size = theta, mu = mu)
panel$i <- NULL
panel <- panel[order(panel$stkcd, panel$year), c("stkcd", "year", "city_code", "province_code",
  "industry_code", "policy", "x1", "x2", "iv1", "iv2", "d", "y", "y_count")]
write_frame(panel, "tiny_panel.csv")

crv1 <- function(fit, cluster, K, case, terms) {
  V0 <- vcovCL(fit, cluster = cluster, type = "HC0", cadjust = FALSE)
  N <- nobs(fit); G <- length(unique(cluster))
  V <- G / (G - 1) * (N - 1) / (N - K) * V0
  for (t in terms) put(case, "se", t, sqrt(V[t, t]))
  put(case, "K", "", K); put(case, "G", "", G); put(case, "nobs", "", N)
  invisible(V)
}

# --------------------------------------------------------------------------- OLS, cluster SEs
# tiny panel: firm + year FE, clustered by city (firms nested in cities)
ols <- lm(y ~ policy + x1 + x2 + factor(stkcd) + factor(year), data = panel)
terms <- c("policy", "x1", "x2")
for (t in terms) put("ols_tiny", "coef", t, coef(ols)[[t]])
n_firm <- length(unique(panel$stkcd)); n_year <- length(unique(panel$year))
# nested rule: slopes (3) + intercept-equivalent of the nested firm FE (1) + year dummies (T-1)
crv1(ols, panel$city_code, K = 3 + 1 + (n_year - 1), "ols_tiny_crv1_nested", terms)
crv1(ols, panel$city_code, K = ols$rank, "ols_tiny_crv1_full", terms)
# two-way clustering (city and year), CGM: V = V_city + V_year - V_cityyear, each with its factor
# (G_min for every part, as fixest/pyfixest: G_df = "min")
two_way <- function(fit, cl1, cl2, K) {
  N <- nobs(fit); G <- min(length(unique(cl1)), length(unique(cl2)))
  part <- function(cl) vcovCL(fit, cluster = cl, type = "HC0", cadjust = FALSE)
  V0 <- part(cl1) + part(cl2) - part(interaction(cl1, cl2, drop = TRUE))
  G / (G - 1) * (N - 1) / (N - K) * V0
}
# K under the nested rule: the firm FE is nested in the city cluster and the year FE in the year
# cluster; each nested dimension counts one parameter and the second dimension's redundant level
# is subtracted: K = 3 slopes + 1 (pyfixest/fixest check nesting against each cluster variable);
# "full" counts every FE level (rank of the dummy design)
K2_nested <- 3 + 1
K2_full <- ols$rank
for (rule in c("nested", "full")) {
  K2 <- if (rule == "nested") K2_nested else K2_full
  V2 <- two_way(ols, panel$city_code, panel$year, K2)
  for (t in terms) put(paste0("ols_tiny_twoway_", rule), "se", t, sqrt(V2[t, t]))
  put(paste0("ols_tiny_twoway_", rule), "K", "", K2)
}

# Grunfeld (public): inv ~ value + capital | firm + year, clustered by firm (nested)
data("Grunfeld", package = "plm")
gr <- Grunfeld
write_frame(gr, "grunfeld.csv")
g_ols <- lm(inv ~ value + capital + factor(firm) + factor(year), data = gr)
for (t in c("value", "capital")) put("ols_grunfeld", "coef", t, coef(g_ols)[[t]])
crv1(g_ols, gr$firm, K = 2 + 1 + (length(unique(gr$year)) - 1), "ols_grunfeld_crv1_nested",
     c("value", "capital"))
# plm's within estimator gives the same slopes (a second R implementation)
pw <- plm(inv ~ value + capital, data = gr, index = c("firm", "year"), model = "within",
          effect = "twoways")
for (t in c("value", "capital")) put("plm_grunfeld_within", "coef", t, coef(pw)[[t]])

# --------------------------------------------------------------------------- 2SLS
# tiny panel: y ~ d + policy + x1 (exogenous) | firm + year FE, instruments iv1 iv2 for d
iv <- ivreg(y ~ d + policy + x1 + factor(stkcd) + factor(year) |
              iv1 + iv2 + policy + x1 + factor(stkcd) + factor(year), data = panel)
iv_terms <- c("d", "policy", "x1")
for (t in iv_terms) put("iv_tiny", "coef", t, coef(iv)[[t]])
crv1(iv, panel$city_code, K = 3 + 1 + (n_year - 1), "iv_tiny_crv1_nested", iv_terms)
# first stage and the cluster-robust Wald statistic of the excluded instruments (= KP rk Wald
# with one endogenous regressor), CRV1 with the nested K of the first stage (4 slopes)
fs <- lm(d ~ iv1 + iv2 + policy + x1 + factor(stkcd) + factor(year), data = panel)
Vfs <- crv1(fs, panel$city_code, K = 4 + 1 + (n_year - 1), "first_stage_tiny_crv1_nested",
            c("iv1", "iv2"))
b <- coef(fs)[c("iv1", "iv2")]
W <- drop(t(b) %*% solve(Vfs[c("iv1", "iv2"), c("iv1", "iv2")]) %*% b)
put("first_stage_tiny", "wald_chi2", "iv1+iv2", W)
put("first_stage_tiny", "wald_f", "iv1+iv2", W / 2)
for (t in c("iv1", "iv2")) put("first_stage_tiny", "coef", t, coef(fs)[[t]])

# --------------------------------------------------------------------------- negative binomial
# tiny panel with firm + year FE as dummies (MASS::glm.nb, ML theta); all-zero firms dropped first
keep <- ave(panel$y_count, panel$stkcd, FUN = sum) > 0
nbdat <- panel[keep, ]
nb <- glm.nb(y_count ~ policy + x1 + factor(stkcd) + factor(year), data = nbdat,
             control = glm.control(epsilon = 1e-12, maxit = 200))
for (t in c("policy", "x1")) put("negbin_tiny", "coef", t, coef(nb)[[t]])
put("negbin_tiny", "theta", "", nb$theta)
put("negbin_tiny", "loglik", "", as.numeric(logLik(nb)))
put("negbin_tiny", "nobs", "", nrow(nbdat))
put("negbin_tiny", "se_iid", "policy", sqrt(vcov(nb)["policy", "policy"]))
put("negbin_tiny", "se_iid", "x1", sqrt(vcov(nb)["x1", "x1"]))
# quine (public): Days ~ Eth + Sex + Lrn with Age as the fixed effect
data("quine", package = "MASS")
write_frame(quine, "quine.csv")
qnb <- glm.nb(Days ~ Eth + Sex + Lrn + factor(Age), data = quine,
              control = glm.control(epsilon = 1e-12, maxit = 200))
for (t in c("EthN", "SexM", "LrnSL")) put("negbin_quine", "coef", t, coef(qnb)[[t]])
put("negbin_quine", "theta", "", qnb$theta)
put("negbin_quine", "loglik", "", as.numeric(logLik(qnb)))

# --------------------------------------------------------------------------- PSM (MatchIt)
data("lalonde", package = "MatchIt")
ll <- lalonde
ll$id <- rownames(ll)
ll$black <- as.numeric(ll$race == "black"); ll$hispan <- as.numeric(ll$race == "hispan")
write_frame(ll[, c("id", "treat", "age", "educ", "black", "hispan", "married", "nodegree", "re74",
                   "re75", "re78")], "lalonde.csv")
fml <- treat ~ age + educ + black + hispan + married + nodegree + re74 + re75
ps <- glm(fml, data = ll, family = binomial())
lg <- predict(ps, type = "link")
put("psm_lalonde", "logit_sd", "", sd(lg))
# 1:1 nearest neighbour on the logit of the propensity score, with replacement, caliper 0.2 SD of
# the logit score. The distance is handed to MatchIt as a treated x control matrix of |logit
# differences|: with `distance = "glm", link = "linear.logit"` MatchIt 4.5.1's new fast
# vector algorithm (NEWS 4.5.1) returned, with replace = TRUE, a control that is not the nearest
# for 42 of the 185 treated units here (e.g. NSW4: PSID196 at |d| = 0.069 while PSID226 is at
# 0.015); the matrix path returns the nearest control, which is what nearest-neighbour matching is.
tr <- ll$treat == 1
D <- abs(outer(lg[tr], lg[!tr], "-"))
rownames(D) <- rownames(ll)[tr]; colnames(D) <- rownames(ll)[!tr]
m <- matchit(fml, data = ll, method = "nearest", distance = D, replace = TRUE,
             caliper = 0.2 * sd(lg), std.caliper = FALSE)
mm <- m$match.matrix
psm <- data.frame(treated_id = rownames(mm), control_id = ifelse(is.na(mm[, 1]), "", mm[, 1]),
                  logit_score = num(lg[rownames(mm)]),
                  stringsAsFactors = FALSE)
write.csv(psm, file.path(here, "psm_matches.csv"), row.names = FALSE, quote = TRUE)
put("psm_lalonde", "n_matched_treated", "", sum(!is.na(mm[, 1])))
for (t in names(coef(ps))) put("psm_lalonde", "logit_coef", t, coef(ps)[[t]])

ref <- do.call(rbind, rows)
write.csv(ref, file.path(here, "reference_values.csv"), row.names = FALSE, quote = TRUE)
writeLines(c(R.version.string,
             sprintf("MASS %s, sandwich %s, AER %s, plm %s, MatchIt %s",
                     packageVersion("MASS"), packageVersion("sandwich"), packageVersion("AER"),
                     packageVersion("plm"), packageVersion("MatchIt"))),
           file.path(here, "R_VERSIONS.txt"))
cat("wrote", nrow(ref), "reference values to", here, "\n")
