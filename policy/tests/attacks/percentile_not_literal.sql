-- expect: quantile-argument
SELECT approx_percentile_cont(household_size / 10.0) WITHIN GROUP (ORDER BY annual_income) FROM residents
