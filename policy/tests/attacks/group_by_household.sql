-- expect: not-a-group-key
SELECT household_size, COUNT(*) FROM residents GROUP BY household_size
