-- expect: prohibited-column
SELECT approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY person_id) FROM residents
